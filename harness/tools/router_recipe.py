"""The training recipe's flags that router train and router eval --split source share
(the lexicon, how it joins the hashed features, dropouts, width), checked before any
work."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError
from llmlib.router.lexicon import Lexicon, load_lexicon


def lexicon_flags(p: argparse.ArgumentParser, when: str = "") -> None:
    p.add_argument(
        "--lexicon",
        default="",
        metavar="PATH",
        help=f"word vectors (router lexicon) the router maps into its table{when}: words no "
        "training row held then route by meaning; '' for none",
    )
    p.add_argument(
        "--hashed_dropout",
        type=float,
        default=0.0,
        help=f"with --lexicon{when}: share of training rows whose hashed features are left "
        "out, so the MLP learns to route from the lexicon alone too (1: the lexicon only)",
    )
    p.add_argument(
        "--fuse",
        default="0",
        metavar="W",
        help=f"with --lexicon{when}: instead of learning it with the hashed features, fit a "
        "regression on the lexicon's mean vector and add its logits W times to the hashed "
        "router's (0: off; auto: the weight that routes the training sources held out in 5 "
        "groups best, 5 extra trainings)",
    )


def balance_flag(p: argparse.ArgumentParser, when: str = "") -> None:
    p.add_argument(
        "--source_balance",
        type=float,
        default=0.0,
        metavar="A",
        help=f"weigh each training row by its source's row count to the power -A within its "
        f"expert{when} (0: rows alike; 1: sources alike), so that large sources do not "
        "teach an expert alone",
    )


def lexicon_of(args: argparse.Namespace) -> Lexicon | None:
    """The lexicon ``--lexicon`` names (a ConfigError saying how to build a missing one)."""
    if not args.lexicon:
        return None
    path = Path(args.lexicon)
    if not path.is_file():
        raise ConfigError(f"lexicon not found: {path} (python -m harness router lexicon)")
    return load_lexicon(path)


def recipe_of(args: argparse.Namespace) -> dict[str, Any]:
    """``train``'s arguments from the training flags router train and router eval share,
    checked before any work."""
    fuse = check_recipe(args)
    return {"word_dropout": args.word_dropout, "lexicon": lexicon_of(args), "dim": args.dim,
            "hashed_dropout": args.hashed_dropout, "fuse": fuse,
            "source_balance": args.source_balance}  # fmt: skip


def check_recipe(args: argparse.Namespace) -> float | str:
    """The training flags router train and router eval share, checked before any work;
    ``--fuse`` as a number or "auto"."""
    if not 0 <= args.word_dropout < 1:
        raise ConfigError(f"--word_dropout must be in [0, 1), got {args.word_dropout}")
    if not 0 <= args.hashed_dropout <= 1:
        raise ConfigError(f"--hashed_dropout must be in [0, 1], got {args.hashed_dropout}")
    if args.hashed_dropout and not args.lexicon:
        raise ConfigError("--hashed_dropout needs --lexicon (the features left to route from)")
    if not 0 <= args.source_balance <= 1:
        raise ConfigError(f"--source_balance must be in [0, 1], got {args.source_balance}")
    if not 1 <= args.dim <= 1024:
        raise ConfigError(f"--dim must be in [1, 1024], got {args.dim}")
    fuse: float | str = str(args.fuse).strip().lower()
    if fuse != "auto":
        try:
            fuse = float(fuse)
        except ValueError:
            fuse = math.nan
        if not 0 <= fuse < math.inf:
            raise ConfigError(f"--fuse must be a number >= 0 or auto, got {args.fuse}")
    if fuse and not args.lexicon:
        raise ConfigError("--fuse needs --lexicon (the regression's word vectors)")
    if fuse and args.hashed_dropout:
        raise ConfigError("--fuse and --hashed_dropout exclude each other: a fused lexicon "
                          "is not learned with the hashed features")  # fmt: skip
    return fuse
