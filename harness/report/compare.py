"""``python -m harness compare RUN RUN ...``: runs side by side, for A/B comparisons.

A RUN is a run directory (with ``summary.json``) or any directory above some (every
``summary.json`` below it is taken, in path order). The table has throughput, TTFT/TPOT
percentiles (LoadGen's), validity and failures, with throughput relative to the first run;
``--plot FILE`` also draws them (default ``compare.png`` in the current directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from harness.report.plots import plot_compare
from llmlib.errors import ConfigError


def find_summaries(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "summary.json":
            found.append(p)
        elif (p / "summary.json").is_file():
            found.append(p / "summary.json")
        elif p.is_dir():
            below = sorted(p.rglob("summary.json"))
            if not below:
                raise ConfigError(f"{p}: no summary.json below it (is it a run directory?)")
            found += below
        else:
            raise ConfigError(f"{p}: no such run directory")
    return found


def row(summary: dict[str, Any], label: str) -> dict[str, Any]:
    lg, h = summary.get("loadgen", {}), summary.get("harness", {})
    comp = summary.get("compliance")
    delivered = summary.get("delivery") or {}  # (Server; absent from older runs)

    def ms(key: str, p: str) -> float | None:
        v = (lg.get(key) or {}).get(p)
        return None if v is None else v / 1e6

    return {
        "label": label,
        "benchmark": summary.get("benchmark"),
        "scenario": summary.get("scenario"),
        "mode": summary.get("mode"),
        "core": f"{summary.get('core_type')} x{summary.get('num_cores')}",
        "validity": f"{comp['test']} {comp['result']}" if comp else summary.get("validity"),
        "under_delivered": bool(delivered.get("under_delivered")),
        "delivered": delivered.get("ratio"),
        "goodput": (summary.get("goodput") or {}).get("share"),
        "samples_per_second": lg.get("samples_per_second"),
        "tokens_per_second": lg.get("tokens_per_second"),
        "ttft_p50_ms": ms("ttft_ns", "p50"),
        "ttft_p99_ms": ms("ttft_ns", "p99"),
        "tpot_p50_ms": ms("tpot_ns", "p50"),
        "tpot_p99_ms": ms("tpot_ns", "p99"),
        "failed": h.get("failed", 0),
    }


def compare(paths: list[str]) -> list[dict[str, Any]]:
    files = find_summaries(paths)
    dirs = [f.parent.resolve() for f in files]
    common = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    rows = []
    for f, d in zip(files, dirs, strict=True):
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{f}: not valid JSON ({exc})") from None
        rel = str(d.relative_to(common))
        rows.append(row(s, d.name if rel == "." else rel))
    return rows


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown; throughput also as a ratio to the first run of the same benchmark,
    scenario and mode; for Server runs the completed share of the scheduled rate and the
    goodput."""
    bases: dict[tuple[Any, ...], float | None] = {}
    for r in rows:
        bases.setdefault((r["benchmark"], r["scenario"], r["mode"]), r.get("tokens_per_second"))
    head = [
        "#",
        "run",
        "benchmark",
        "scenario",
        "mode",
        "core",
        "result",
        "samples/s",
        "tokens/s",
        "vs first of kind",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "failed",
        "delivered",
        "goodput",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, r in enumerate(rows, 1):
        tps = r.get("tokens_per_second")
        base = bases[(r["benchmark"], r["scenario"], r["mode"])]
        ratio = f"{tps / base:.2f}x" if tps is not None and base else "-"
        cells = [
            str(n),
            r["label"],
            str(r["benchmark"]),
            str(r["scenario"]),
            str(r["mode"]),
            r["core"],
            str(r["validity"]) + (" UNDER-DELIVERED" if r.get("under_delivered") else ""),
            _f(r["samples_per_second"], ",.1f"),
            _f(tps, ",.1f"),
            ratio,
            _f(r["ttft_p50_ms"], ".2f"),
            _f(r["ttft_p99_ms"], ".2f"),
            _f(r["tpot_p50_ms"], ".2f"),
            _f(r["tpot_p99_ms"], ".2f"),
            str(r["failed"]),
            _f(r.get("delivered"), ".1%"),
            _f(r.get("goodput"), ".1%"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="python -m harness compare", description=__doc__)
    ap.add_argument("runs", nargs="+", help="run directories (or directories above them)")
    ap.add_argument("--plot", default="compare.png", help="PNG to write ('' for none)")
    ap.add_argument("--json", default="", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = compare(args.runs)
    print(table(rows))
    print(
        "(latencies in ms, LoadGen's; 'vs first of kind': tokens/s relative to the first "
        "run of the same benchmark, scenario and mode; '#' numbers the runs in the plot)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        if plot_compare(rows, Path(args.plot)):
            print(f"plot: {Path(args.plot).resolve()}")
        else:
            print("no plot: matplotlib is not installed (pip install -e .[plots])")
    return 0
