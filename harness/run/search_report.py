"""What ``python -m harness search`` leaves: ``search.json`` (every run), ``search.md`` (the
table), ``search.png`` (QPS against p99 TTFT, p99 TPOT and the completed share, the chosen
point marked) and ``user.conf`` (the chosen QPS as LoadGen reads it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.plots import _pyplot
from llmlib.config.settings import Config
from llmlib.data.benchmarks import load_benchmark


def write_results(root: Path, cfg: Config, probes: list[dict[str, Any]], peak: float,
                  chosen: float, wall_s: float) -> Path:  # fmt: skip
    spec = load_benchmark(cfg.config_dir, cfg.benchmark)
    doc = {
        "benchmark": cfg.benchmark, "mlperf_model": spec.mlperf_model,
        "core_type": cfg.core_type, "system": cfg.system_name,
        "probe_peak_qps": peak, "chosen_qps": chosen, "runs": len(probes),
        "wall_s": round(wall_s, 1), "delivery_tolerance": cfg.delivery_tolerance,
        "probes": probes,
    }  # fmt: skip
    (root / "search.json").write_text(json.dumps(doc, indent=1) + "\n")
    if chosen > 0:
        (root / "user.conf").write_text(
            f"# harness search, {cfg.benchmark} on {cfg.system_name} ({cfg.core_type}): the "
            f"highest Server QPS that held\n{spec.mlperf_model}.Server.target_qps = {chosen:g}\n"
        )
    plotted = plot_search(probes, chosen, root / "search.png", cfg.delivery_tolerance)
    lines = [
        f"# Capacity search: {cfg.benchmark}, {cfg.core_type} on {cfg.system_name}",
        "",
        f"Chosen: **{chosen:g} QPS**" if chosen > 0 else "No QPS held.",
        f" ({len(probes)} runs, {wall_s:.0f} s; the probes' peak {peak:g} QPS; delivery "
        f"tolerance {cfg.delivery_tolerance:.0%}).",
        "",
        "| run | QPS | holds | completed/s | delivered | p99 TTFT ms | p99 TPOT ms | wall s "
        "| why not |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in probes:
        stopped = p.get("stopped_s") or 0.0  # (figures of what finished before the stop)
        lines.append(
            f"| {p['kind']} | {p['qps']:.2f} | {'yes' if p['holds'] else 'no'} | "
            f"{p['completed_qps']:.2f} | {'-' if stopped else format(p['delivered'], '.1%')} | "
            f"{p['ttft_p99_ms']:.0f} | {p['tpot_p99_ms']:.1f} | {p['wall_s']:.0f} | {p['why']}"
            + (f" (after {stopped:.1f} s)" if stopped else "")
            + " |"
        )
    if plotted:
        lines += ["", "![QPS against p99 TTFT, p99 TPOT and the delivered share](search.png)"]
    (root / "search.md").write_text("\n".join(lines) + "\n")
    return root


def plot_search(probes: list[dict[str, Any]], chosen: float, out: Path,
                tolerance: float = 0.02) -> bool:  # fmt: skip
    """Three panels over the Server runs' QPS; False where matplotlib is missing."""
    plt = _pyplot()
    runs = sorted((p for p in probes if p["kind"] != "bound"), key=lambda p: p["qps"])
    if plt is None or not runs:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("ttft_p99_ms", "p99 TTFT (ms)"), ("tpot_p99_ms", "p99 TPOT (ms)"),
              ("delivered", "delivered (share done in time)"))  # fmt: skip
    for ax, (key, title) in zip(axes, panels, strict=True):
        for holds, colour in ((True, "tab:green"), (False, "tab:red")):
            pts = [
                p
                for p in runs
                if p["holds"] == holds  # (a stopped run's share: partial)
                and not (key == "delivered" and p.get("stopped_s"))
            ]
            ax.scatter([p["qps"] for p in pts], [p[key] for p in pts], c=colour,
                       label="holds" if holds else "breaks")  # fmt: skip
        if chosen > 0:
            ax.axvline(chosen, color="k", linestyle="--", linewidth=1, label=f"{chosen:g} QPS")
        ax.set_xlabel("Server target QPS")
        ax.set_title(title)
    axes[2].axhline(1 - tolerance, color="tab:red", linestyle=":", linewidth=1,
                    label=f"tolerance {tolerance:.0%}")  # fmt: skip
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True
