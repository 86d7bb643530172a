"""The router's trained weights: the embedding table (int8 with per-column scales, or
float32) and the MLP, as ``RouterModel``; ``load_model`` reads an artifact (``.npz``)
written by training and checks its feature version."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router.features import (
    CHAR_NGRAMS,
    FEATURE_VERSION,
    MAX_WORD_CHARS,
    MAX_WORDS,
)


@dataclass
class RouterModel:
    """The trained weights and what they were trained for."""

    experts: list[str]
    buckets: int
    emb: np.ndarray  # (buckets, dim) float32
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    # the int8 table and its per-column scales, when loaded at int8 (``emb`` is then their
    # product; the C path sums the int8 rows: a quarter of the memory traffic)
    q: np.ndarray | None = None
    scale: np.ndarray | None = None
    # the lexicon's keys (``llmlib.router.lexicon``: uint32, sorted), one per table row after
    # the first ``buckets``; None: no lexicon
    lex_keys: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def quantized(self) -> tuple[np.ndarray, np.ndarray]:
        """The table as int8 with one scale per column (symmetric, max-abs)."""
        scale = np.abs(self.emb).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(self.emb / scale), -127, 127).astype(np.int8)
        return q, scale.astype(np.float32)

    def dequantized(self) -> RouterModel:
        """This model as its int8 artifact loads: the table rounded to int8 and back."""
        q, scale = self.quantized()
        emb = q.astype(np.float32) * scale
        return dataclasses.replace(self, emb=emb, q=q, scale=scale)

    def save(self, path: str | Path, keep_float: bool = True) -> None:
        """An ``.npz``: the int8 table and its scales always, the float table too unless
        ``keep_float`` is False (the float/int8 agreement check needs it)."""
        q, scale = self.quantized()
        arrays = {
            "emb_q": q,
            "emb_scale": scale,
            "w1": self.w1.astype(np.float32),
            "b1": self.b1.astype(np.float32),
            "w2": self.w2.astype(np.float32),
            "b2": self.b2.astype(np.float32),
        }
        if keep_float:
            arrays["emb"] = self.emb.astype(np.float32)
        if self.lex_keys is not None:
            arrays["lex_keys"] = self.lex_keys.astype(np.uint32)
        header = {
            "feature_version": FEATURE_VERSION,
            "buckets": self.buckets,
            "experts": self.experts,
            "max_words": MAX_WORDS,
            "max_word_chars": MAX_WORD_CHARS,
            "char_ngrams": list(CHAR_NGRAMS),
            **self.meta,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_model(path: str | Path, precision: str = "int8") -> tuple[RouterModel, dict[str, Any]]:
    """Load an artifact; the table dequantized from int8 (``precision`` int8) or the float
    one (``float``: needs an artifact saved with it). Refuses another feature version."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"router artifact not found: {p} (python -m harness router train)")
    try:
        z = np.load(p, allow_pickle=False)
        header = json.loads(bytes(z["header"]).decode())
    except Exception as exc:
        raise ConfigError(f"{p}: not a router artifact ({exc})") from None
    got = header.get("feature_version")
    if got != FEATURE_VERSION:
        raise ConfigError(
            f"{p}: router artifact has feature version {got}, this llmlib computes version "
            f"{FEATURE_VERSION}: retrain it (python -m harness router train)"
        )
    q = scale = None
    if precision == "int8":
        q = np.ascontiguousarray(z["emb_q"], dtype=np.int8)
        scale = np.ascontiguousarray(z["emb_scale"], dtype=np.float32)
        emb = q.astype(np.float32) * scale
    elif precision == "float":
        if "emb" not in z:
            raise ConfigError(f"{p}: saved without the float table; use precision int8")
        emb = z["emb"]
    else:
        raise ConfigError(f"router precision must be int8 or float, not {precision!r}")
    lex_keys = np.ascontiguousarray(z["lex_keys"], dtype=np.uint32) if "lex_keys" in z else None
    rows = int(header.get("buckets", -1)) + (0 if lex_keys is None else len(lex_keys))
    if emb.ndim != 2 or emb.shape[0] != rows:
        raise ConfigError(
            f"{p}: not a router artifact (its table has {emb.shape[0]} rows, its header and "
            f"lexicon say {rows}); retrain it (python -m harness router train)"
        )
    model = RouterModel(
        list(header["experts"]),
        int(header["buckets"]),
        np.ascontiguousarray(emb, dtype=np.float32),
        z["w1"],
        z["b1"],
        z["w2"],
        z["b2"],
        {k: v for k, v in header.items() if k not in ("experts", "buckets")},
        q,
        scale,
        lex_keys,
    )
    return model, header


# --- decisions --------------------------------------------------------------------------------
