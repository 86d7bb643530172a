"""``python -m harness benchmarks``: the benchmarks llmlib knows, as a Markdown table: LoadGen's
model name, the scenarios their YAML sets up, the Server token-latency limits and the sample
counts from LoadGen's own mlperf.conf, the output cap, the compliance tests a SubmissionRun
runs, and the accuracy targets from the submission checker. README's table is this output
(a test keeps them the same)."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.argparser import ArgParser
from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import load_benchmark
from llmlib.eval.rules import official_settings
from llmlib.eval.targets import TARGETS

SCENARIO_NAMES = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream"}


def _accuracy(name: str) -> str:
    t = TARGETS.get(name)
    if t is None:
        return "-"
    tier = "/".join(f"{x:.1%}".replace(".0%", "%") for x in t.tiers)
    parts = [f"{m} {v:g}" for m, v in t.scores.items()]
    text = f"{', '.join(parts)} ({tier})"
    if t.gen_len is not None:
        text += ", GEN_LEN ±10%"
    if t.tokens_per_sample is not None:
        low, high = t.tokens_per_sample
        text += ", tokens/sample " + ("±10%" if low is not None else f"<= {high:g}")
    return text


def table(config_dir: str | Path = REPO_ROOT / "configs") -> str:
    """The Markdown table of every benchmark under ``config_dir``."""
    rows = [
        "| benchmark | LoadGen model | scenarios | Server TTFT / TPOT p99 | samples | "
        "max output | compliance | accuracy (of the reference) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted((Path(config_dir) / "benchmarks").glob("*.yaml"), key=lambda p: p.stem):
        spec = load_benchmark(config_dir, path.stem)
        scen = (yaml.safe_load(path.read_text()) or {}).get("scenarios") or {}
        server = official_settings(spec.mlperf_model, "Server")
        offline = official_settings(spec.mlperf_model, "Offline")
        samples = int(offline["performance_sample_count_override"])
        acc = int(offline.get("accuracy_sample_count_override", 0))
        count = f"{samples:,}" + (f" ({acc:,} scored)" if acc and acc != samples else "")
        limits = (
            f"{server['ttft_latency'] / 1e6:g} ms / {server['tpot_latency'] / 1e6:g} ms"
            if "server" in scen
            else "(no Server)"
        )
        cap = f"{spec.max_new_tokens:,}"
        if spec.accuracy_max_new_tokens:
            cap += f" (accuracy {spec.accuracy_max_new_tokens:,})"
        if path.stem == "tiny":
            count = f"{spec.synthetic_samples():,} (synthetic)"
        rows.append(
            f"| `{path.stem}` | `{spec.mlperf_model}` | "
            f"{', '.join(SCENARIO_NAMES.get(s, s) for s in scen)} | "
            f"{limits} | {count} | {cap} | {', '.join(spec.compliance) or '-'} | "
            f"{_accuracy(path.stem)} |"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="python -m harness benchmarks", description=__doc__)
    ap.add_argument("--config_dir", default=str(REPO_ROOT / "configs"))
    args = ap.parse_args(argv)
    print(table(args.config_dir))
    return 0
