"""``python -m harness scorecard RUN...``: ship or no-ship, each run against a baseline.

A run is a simulator summary (``simulate``'s ``sim-<policy>.json``) or a harness run
directory (every ``summary.json`` under it is one run). Checks, each against the baseline
(the first run unless ``--baseline`` names another):

* p95 TTFT and p95 TPOT no worse than the baseline's by more than ``--max_regress``
  (headroom: how much lower, as a share of the baseline's);
* load imbalance (busiest core's requests over the mean) at most ``--max_imbalance``;
* failed requests at most ``--max_error_rate`` of those issued.

Prints a table, writes ``scorecard.json`` and, where matplotlib is installed, a PNG of p95
TTFT and goodput per dollar per run (goodput per dollar is the simulator's; live runs have
no prices). Exits 1 when any run is NO-SHIP (a gate), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from llmlib.errors import ConfigError


def _pool_imbalance(per_core: dict[str, Any], pools: dict[str, int] | None) -> float:
    """The busiest core over its pool's mean, the worst pool (a disaggregated run's pools
    are the cores in order: prefill first; one pool otherwise)."""
    issued = [int(per_core[k].get("issued", 0)) for k in sorted(per_core, key=int) if int(k) >= 0]
    sizes = list((pools or {"shared": len(issued)}).values())
    out, at = 0.0, 0
    for n in sizes:
        out = max(out, _imbalance(issued[at : at + n]))
        at += n
    return out


def _imbalance(counts: list[int]) -> float:
    mean = sum(counts) / len(counts) if counts else 0.0
    return max(counts) / mean if mean else 0.0


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The runs at ``path`` in one shape: name, p95 TTFT/TPOT (ms), imbalance, issued,
    failed, goodput per dollar (None for live runs), source."""
    if path.is_file():
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a JSON summary ({exc})") from None
        if not isinstance(d, dict) or "ttft_ms" not in d or "per_engine" not in d:
            raise ConfigError(f"{path}: not a simulator summary (simulate's sim-<policy>.json)")
        return [
            {
                "name": f"{d.get('policy', path.stem)} ({path.parent.name})",
                "source": "sim",
                "ttft_p95_ms": d["ttft_ms"].get("p95"),
                "tpot_p95_ms": d["tpot_ms"].get("p95"),
                "imbalance": float(d["per_engine"]["busiest_over_mean"]),
                "issued": int(d["requests"]),
                "failed": 0,
                "goodput_per_dollar": d.get("goodput_per_dollar"),
            }
        ]
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory or summary file")
    runs = []
    found = sorted(path.rglob("summary.json"))

    def tag(f: Path) -> str:  # the directory given, and where under it when several
        under = f.parent.relative_to(path)
        return path.name if len(found) == 1 else f"{path.name}/{under}"

    for f in found:
        d = json.loads(f.read_text())
        h = d.get("harness") or {}
        per_core = h.get("per_core") or {}
        ttft, tpot = h.get("ttft_ns") or {}, h.get("tpot_ns") or {}
        runs.append(
            {
                "name": f"{d.get('policy', '?')} {d.get('scenario', '')} ({tag(f)})",
                "source": "live",
                "ttft_p95_ms": ttft["p95"] / 1e6 if "p95" in ttft else None,
                "tpot_p95_ms": tpot["p95"] / 1e6 if "p95" in tpot else None,
                "imbalance": _pool_imbalance(per_core, d.get("pools")),
                "issued": int(h.get("issued", 0)),
                "failed": int(h.get("failed", 0)),
                "goodput_per_dollar": None,
            }
        )
    if not runs:
        raise ConfigError(f"{path}: no summary.json under it")
    return runs


def score(
    runs: list[dict[str, Any]],
    baseline: int = 0,
    max_regress: float = 0.05,
    max_imbalance: float = 1.5,
    max_error_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """Each run with its checks against ``runs[baseline]`` and a verdict."""
    base = runs[baseline]
    out = []
    for r in runs:
        checks: dict[str, bool] = {}
        row = dict(r)
        for key in ("ttft_p95_ms", "tpot_p95_ms"):
            mine, theirs = r[key], base[key]
            if mine is None or not theirs:
                row[key.replace("_ms", "_headroom")] = None
                continue
            row[key.replace("_ms", "_headroom")] = 1.0 - mine / theirs
            checks[key.split("_")[0]] = mine <= theirs * (1.0 + max_regress)
        checks["imbalance"] = r["imbalance"] <= max_imbalance
        rate = r["failed"] / r["issued"] if r["issued"] else 0.0
        row["error_rate"] = rate
        checks["errors"] = rate <= max_error_rate
        row["checks"] = checks
        row["baseline"] = r is base
        row["verdict"] = "SHIP" if all(checks.values()) else "NO-SHIP"
        out.append(row)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:+.1%}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    lines = [
        "| run | p95 TTFT ms (headroom) | p95 TPOT ms (headroom) | busiest / mean | errors | "
        "goodput per $ | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        failed = [k for k, ok in r["checks"].items() if not ok]
        verdict = r["verdict"] + (f" ({', '.join(failed)})" if failed else "")
        gpd = r["goodput_per_dollar"]
        lines.append(
            f"| {r['name']}{' (baseline)' if r['baseline'] else ''} | "
            f"{ms(r['ttft_p95_ms'])} ({pct(r.get('ttft_p95_headroom'))}) | "
            f"{ms(r['tpot_p95_ms'])} ({pct(r.get('tpot_p95_headroom'))}) | "
            f"{r['imbalance']:.2f} | {r['error_rate']:.2%} | "
            f"{'-' if gpd is None else f'{gpd:,.0f}'} | {verdict} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["name"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows)), 4))
    colors = ["tab:green" if r["verdict"] == "SHIP" else "tab:red" for r in rows]
    a.bar(names, [r["ttft_p95_ms"] or 0 for r in rows], color=colors)
    a.set_title("p95 TTFT (ms)")
    b.bar(names, [r["goodput_per_dollar"] or 0 for r in rows], color=colors)
    b.set_title("goodput per dollar (requests)")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="python -m harness scorecard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("runs", nargs="+", help="sim-<policy>.json files or run directories")
    ap.add_argument("--baseline", default="", help="a run's name or index (default: the first)")
    ap.add_argument("--max_regress", type=float, default=0.05)
    ap.add_argument("--max_imbalance", type=float, default=1.5)
    ap.add_argument("--max_error_rate", type=float, default=0.0)
    ap.add_argument("--out", default="build/scorecard", help="a directory")
    args = ap.parse_args(argv)  # (errors: harness/cli.py says them, exit 2)
    runs = [r for p in args.runs for r in load_runs(Path(p))]
    base = 0
    if args.baseline:
        names = [r["name"] for r in runs]
        if args.baseline.isdigit() and int(args.baseline) < len(runs):
            base = int(args.baseline)
        else:
            hits = [k for k, n in enumerate(names) if n.startswith(args.baseline)]
            if not hits:
                raise ConfigError(
                    f"--baseline {args.baseline!r}: no such run; runs: {', '.join(names)}"
                )
            base = hits[0]
    rows = score(runs, base, args.max_regress, args.max_imbalance, args.max_error_rate)
    print(table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scorecard.json").write_text(json.dumps(rows, indent=1) + "\n")
    drawn = plot(rows, out / "scorecard.png")
    print(f"scorecard: {out / 'scorecard.json'}" + (f", {out / 'scorecard.png'}" if drawn else ""))
    return 0 if all(r["verdict"] == "SHIP" for r in rows) else 1
