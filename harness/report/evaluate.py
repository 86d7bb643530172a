"""``python -m harness evaluate RUN_DIR ...`` (``make evaluate RUN_DIR=...``): score accuracy
runs (see ``llmlib.eval.accuracy``). A RUN_DIR is an accuracy run directory, or a directory
above some. The dataset and tokenizer are the run's own (from its ``spec.json``); the verdict
goes to the console and to ``accuracy.json`` / ``accuracy.txt`` in the run directory. MBXP
(mixtral-8x7b) and LiveCodeBench (deepseek-r1, gpt-oss-120b; its tests from
``--lcb_tests_path``) build and run generated code: ``--workers`` programs at once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from harness.report.report import parse_detail_log
from harness.run.prepare import build_dataset
from llmlib.config.settings import Config
from llmlib.data.benchmarks import BenchmarkSpec, Dataset, load_benchmark
from llmlib.data.tokenizer import load_tokenizer
from llmlib.errors import ConfigError
from llmlib.eval import livecodebench
from llmlib.eval.accuracy import AccuracyResult, Check, read_accuracy_log, score


def find_accuracy_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "mlperf_log_accuracy.json").is_file() and (p / "spec.json").is_file():
            runs.append(p)
        elif p.is_dir():
            below = sorted(
                f.parent
                for f in p.rglob("spec.json")
                if json.loads(f.read_text()).get("mode") == "AccuracyOnly"
            )
            if not below:
                raise ConfigError(
                    f"{p}: no accuracy run below it (run with --test_mode=AccuracyOnly)"
                )
            runs += below
        else:
            raise ConfigError(f"{p}: no such run directory")
    return runs


def score_log(
    cfg: Config,
    bench: BenchmarkSpec,
    ds: Dataset,
    log_path: Path,
    workers: int | None = None,
    lcb_tests_path: str = "",
    answer_tokens: dict[int, int] | None = None,
) -> AccuracyResult:
    """Score the responses in ``log_path`` (an mlperf_log_accuracy.json) against ``ds`` with
    the run's tokenizer; ``lcb_tests_path`` overrides the run's ``--lcb_tests_path``;
    ``answer_tokens``: a reasoning stream's answer length per sample (``reasoning.csv``)."""
    outputs = read_accuracy_log(log_path, cfg.output_dtype)
    if max(outputs) >= len(ds):
        raise ConfigError(
            f"{log_path}: sample index {max(outputs)} is past the dataset's {len(ds)}"
        )
    tok = load_tokenizer(cfg.tokenizer_path) if cfg.tokenizer_path else None
    fields = getattr(ds, "fields", None)
    refs = [ds.reference_tokens(i) for i in range(len(ds))]
    refs_capped = None if any(r is None for r in refs) else [r[: ds.max_new_tokens] for r in refs]  # type: ignore[index]
    lcb_path = lcb_tests_path or cfg.lcb_tests_path
    # gpt-oss-120b's scorer keeps the special tokens: harmony's channel markers are text
    keep_special = bench.family == "gpt-oss-120b"
    return score(
        cfg.benchmark,
        outputs,
        fields,
        refs_capped,
        (lambda ids: tok.decode(ids, skip_special=not keep_special)) if tok is not None else None,
        mbxp_workers=workers,
        family=bench.family,
        lcb_tests=livecodebench.load_tests(lcb_path) if lcb_path else None,
        source=getattr(ds, "source", ""),
        answer_tokens=answer_tokens,
    )


def answer_lengths(run_dir: Path) -> dict[int, int] | None:
    """sample -> answer tokens from a run's ``reasoning.csv`` (None without one)."""
    path = run_dir / "reasoning.csv"
    if not path.is_file():
        return None
    with open(path) as f:
        return {int(r["sample"]): int(r["answer_tokens"]) for r in csv.DictReader(f)}


def evaluate_run(
    run_dir: Path, workers: int | None = None, lcb_tests_path: str = ""
) -> dict[str, Any]:
    """Score one accuracy run; ``lcb_tests_path`` overrides the run's ``--lcb_tests_path``."""
    spec = json.loads((run_dir / "spec.json").read_text())
    cfg = Config.from_json(spec["config"])
    bench = load_benchmark(cfg.config_dir, cfg.benchmark).for_mode(spec["mode"])
    ds = build_dataset(cfg, bench)
    log_path = run_dir / "mlperf_log_accuracy.json"
    res = score_log(cfg, bench, ds, log_path, workers, lcb_tests_path, answer_lengths(run_dir))
    n_logged = res.samples
    expected = parse_detail_log(run_dir / "mlperf_log_detail.txt").get(
        "effective_accuracy_sample_count"
    )
    if isinstance(expected, int) and expected > 0:
        want = min(expected, len(ds))
        told = f"scored {n_logged} of the dataset's {len(ds)} samples"
        if want < len(ds):
            told += f" (LoadGen's accuracy sample count, {expected}, from mlperf.conf or user.conf)"
        if n_logged < want:
            told += f"; {want - n_logged} of the {want} LoadGen issued are missing from the log"
            res.checks.append(Check("samples logged", float("nan")))
        res.note = "; ".join(n for n in (told, res.note) if n)
    out = res.to_json() | {"run_dir": str(run_dir), "dataset": getattr(ds, "name", "")}
    (run_dir / "accuracy.json").write_text(json.dumps(out, indent=2))
    (run_dir / "accuracy.txt").write_text(res.table() + "\n")
    print(f"{run_dir}\n{res.table()}\n")
    return out


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="python -m harness evaluate", description=__doc__)
    ap.add_argument("runs", nargs="+", help="accuracy run directories (or directories above)")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="MBXP programs built and run at once (default: one per CPU)",
    )
    ap.add_argument(
        "--lcb_tests_path",
        default="",
        help="LiveCodeBench's test cases (code_generation_lite JSONL, a file or a directory): "
        "scores the livecodebench rows of deepseek-r1 and gpt-oss-120b (default: the run's)",
    )
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers must be at least 1, got {args.workers}")
    runs = find_accuracy_runs(args.runs)
    if args.lcb_tests_path:
        livecodebench.load_tests(args.lcb_tests_path)  # a bad path is one line, before scoring
    verdicts = [evaluate_run(r, args.workers, args.lcb_tests_path)["verdict"] for r in runs]
    return 1 if "FAIL" in verdicts else 0
