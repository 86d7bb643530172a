"""``python -m harness router eval --split source``: the router, and MiniLM + LR next to it,
scored on sources held out in groups (``llmlib.router.evaluation.cross_source``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.tools.router import routing_router
from harness.tools.router_recipe import recipe_of
from llmlib.errors import ConfigError
from llmlib.router.corpus import read_corpus
from llmlib.router.evaluation import baseline_fitter, confusion_table, cross_source, router_fitter


def by_source_eval(args: argparse.Namespace) -> None:
    """``router eval --split source``: the corpus's sources held out in ``--folds`` groups
    (each once), the router (with the config's gate and threshold) retrained on the
    others, and with ``--baseline`` MiniLM + LR on the same folds; accuracy, per-label
    recall, per-source accuracy and the router's calibration."""
    if args.folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {args.folds}")
    recipe = recipe_of(args)
    rows = read_corpus(Path(args.data))
    template = routing_router(args.routing_config, args.router)
    experts = template.experts
    k = args.folds
    cal = args.calibrate
    pre = tuple(int(x) for x in args.prefixes.split(",") if x)
    if template.threshold_rule == "balanced" and cal != "source":
        raise ConfigError(
            "confidence_threshold: balanced is picked on unseen sources: add --calibrate source"
        )
    picked: list[float] = []
    fitter = router_fitter(template, prefixes=pre, calibrate=cal, picked=picked, **recipe)
    res = {"router": cross_source(rows, *fitter, experts, k, template.default)}
    if picked:
        res["router"]["thresholds_picked"] = picked
    res["router"]["recipe"] = {**recipe, "lexicon": args.lexicon or None, "calibrate": cal}
    teacher = None
    if args.distill:
        from llmlib.router.distill import Teacher, unlabeled_pool

        teacher = Teacher()
        pool = unlabeled_pool({r["text"] for r in rows}, args.distill)
        fitter = router_fitter(template, teacher, pool, prefixes=pre, calibrate=cal, **recipe)
        res["router_distilled"] = cross_source(rows, *fitter, experts, k)
    if args.baseline:
        if teacher is None:
            from llmlib.router.distill import Teacher

            teacher = Teacher()
        res["minilm_lr"] = cross_source(rows, *baseline_fitter(rows, teacher), experts, k)
    for name, r in res.items():
        print(json.dumps({name: {k: v for k, v in r.items() if k != "confusion"}}, indent=1))
        print(confusion_table(r))
    print(source_table(res))


def source_table(res: dict[str, dict[str, Any]]) -> str:
    """Markdown: accuracy and per-label recall on the source-held-out split, one row each."""
    experts = next(iter(res.values()))["experts"]
    lines = ["| held out by source | overall | " + " | ".join(experts) + " |",
             "|---" * (len(experts) + 2) + "|"]  # fmt: skip
    for name, r in res.items():
        cells = ["-" if r["recall"][e] is None else f"{r['recall'][e]:.3f}" for e in experts]
        lines.append(f"| {name} | {r['accuracy']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
