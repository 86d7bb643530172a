"""PNG plots of a run (from its ``requests.csv``) and of a comparison of runs.

Drawn with matplotlib's Agg backend (no display needed). matplotlib comes with the ``dev``
and ``plots`` extras; without it, plotting is skipped with a note, never an error.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harness.report.report import RunSummary

LATENCY_PNG = "latency_cdf.png"
THROUGHPUT_PNG = "throughput.png"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def read_requests(path: Path) -> dict[str, np.ndarray]:
    """Columns of ``requests.csv`` as float arrays (NaN where empty), plus ``ok``."""
    cols: dict[str, list[float]] = {
        k: [] for k in ("issue_ms", "ttft_ms", "latency_ms", "tpot_ms", "n_tokens")
    }
    ok: list[bool] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for k, vals in cols.items():
                v = row.get(k, "")
                vals.append(float(v) if v not in ("", None) else np.nan)
            ok.append(not row.get("error"))
    out = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    out["ok"] = np.asarray(ok, dtype=bool)
    return out


def _cdf(ax: Any, values: np.ndarray, title: str, limit_ms: float | None) -> None:
    v = np.sort(values[np.isfinite(values)])
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of requests")
    ax.grid(True, alpha=0.3)
    if not len(v):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(v, np.arange(1, len(v) + 1) / len(v), lw=1.5)
    p99 = float(np.percentile(v, 99))
    ax.axvline(p99, color="tab:orange", ls=":", label=f"p99 {p99:.2f} ms")
    if limit_ms:
        ax.axvline(limit_ms, color="tab:red", ls="--", label=f"limit {limit_ms:g} ms")
        if limit_ms > 5 * v[-1] and v[0] > 0:  # far-off limit: a log axis keeps the curve readable
            ax.set_xscale("log")
            ax.set_xlabel("ms (log scale)")
    ax.legend(loc="lower right")


def plot_run(run_dir: Path, summary: RunSummary) -> list[str]:
    """Draw the run's plots into ``run_dir``; returns the file names written."""
    plt = _pyplot()
    req = run_dir / "requests.csv"
    if plt is None or not req.is_file():
        return []
    d = read_requests(req)
    lg = summary.get("loadgen", {})
    ttft_lim = lg.get("ttft_limit_ns")
    tpot_lim = lg.get("tpot_limit_ns")
    title = f"{summary['benchmark']} / {summary['scenario']} / {summary['mode']}"
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    streamed = np.isfinite(d["ttft_ms"]).any()
    _cdf(
        axes[0],
        d["ttft_ms"] if streamed else d["latency_ms"],
        "TTFT" if streamed else "latency (no first tokens: not streamed)",
        ttft_lim / 1e6 if ttft_lim and streamed else None,
    )
    _cdf(
        axes[1],
        d["tpot_ms"],
        "TPOT" if streamed else "TPOT (needs first tokens: none in this run)",
        tpot_lim / 1e6 if tpot_lim else None,
    )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(run_dir / LATENCY_PNG, dpi=90)
    plt.close(fig)
    written.append(LATENCY_PNG)

    done = d["ok"] & np.isfinite(d["latency_ms"])
    if done.any():
        t_end = (d["issue_ms"] + d["latency_ms"])[done] / 1e3
        toks = d["n_tokens"][done]
        t_max = float(t_end.max())
        edges = np.append(np.arange(0.0, t_max, 1.0), t_max + 1e-9)  # last bin: what is left
        width = np.diff(edges)
        tok_s = np.histogram(t_end, bins=edges, weights=toks)[0] / width
        smp_s = np.histogram(t_end, bins=edges)[0] / width
        gpu = _gpu_samples(run_dir / "gpu.csv")
        if gpu is None:
            fig, ax = plt.subplots(figsize=(11, 3.5))
        else:  # the GPUs as NVML saw them, on the same time axis
            fig, (ax, gax) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
            _gpu_panel(gax, gpu)
        (h1,) = ax.step(edges[:-1], tok_s, where="post", label="tokens/s")
        if gpu is None:
            ax.set_xlabel("seconds since the test started")
        ax.set_ylabel("output tokens/s (1 s bins)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        (h2,) = ax2.step(
            edges[:-1], smp_s, where="post", color="tab:green", alpha=0.6, label="samples/s"
        )
        ax2.set_ylabel("completed samples/s")
        ax2.set_ylim(bottom=0)
        ax.legend(handles=[h1, h2], loc="lower right", fontsize=8)
        ax.set_title(f"{title}: throughput over time")
        fig.tight_layout()
        fig.savefig(run_dir / THROUGHPUT_PNG, dpi=90)
        plt.close(fig)
        written.append(THROUGHPUT_PNG)
    return written


def _gpu_samples(path: Path) -> np.ndarray | None:
    """gpu.csv's rows (t_s, gpu, util %, memory util %, memory MiB, SM clock, power), or
    None where the run has none."""
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text(errors="replace").splitlines()[1:]:
        try:
            rows.append([float(x) for x in line.split(",")[:5]])
        except ValueError:
            return None  # not the monitor's file
    a = np.array([r for r in rows if len(r) == 5], dtype=np.float64)
    return a if len(a) else None


def _gpu_panel(ax: Any, rows: np.ndarray) -> None:
    ax2 = ax.twinx()
    for g in np.unique(rows[:, 1]).astype(int):
        r = rows[rows[:, 1] == g]
        ax.plot(r[:, 0], r[:, 2], label=f"GPU {g} utilisation %")
        ax2.plot(r[:, 0], r[:, 4] / 1024, linestyle="--", alpha=0.6, label=f"GPU {g} memory GiB")
    ax.set_ylim(0, 105)
    ax.set_ylabel("utilisation %")
    ax2.set_ylabel("memory used (GiB)")
    ax2.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the test started")
    ax.grid(True, alpha=0.3)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)


def plot_compare(rows: list[dict[str, Any]], out: Path) -> bool:
    """Bars of tokens/s and p99 TTFT/TPOT per run; False if matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    x = np.arange(len(rows))
    labels = [f"#{i + 1}" for i in x]  # the compare table's run numbers
    fig, axes = plt.subplots(1, 3, figsize=(min(6 + 1.2 * len(rows), 24), 3.8))
    for ax, key, name in (
        (axes[0], "tokens_per_second", "tokens/s"),
        (axes[1], "ttft_p99_ms", "TTFT p99 (ms)"),
        (axes[2], "tpot_p99_ms", "TPOT p99 (ms)"),
    ):
        vals = [r.get(key) or 0.0 for r in rows]
        colors = ["tab:blue" if r["validity"] == "VALID" else "tab:gray" for r in rows]
        ax.bar(x, vals, color=colors)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(name)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("runs as numbered in the compare table (gray: not VALID)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True
