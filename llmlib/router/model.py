"""The query router: a keyword gate, then hashed n-gram features and a small MLP.

Features (``llmlib.router.features``): hashed words, character n-grams and word pairs of
the prompt's first words. The text's embedding is the mean of the feature rows of an
embedding table (int8 with per-column scales, or float32), then ``relu(x @ w1 + b1) @ w2 +
b2`` gives one logit per expert.

Inference needs only numpy. A word's features are the same wherever it appears, so each
distinct word's summed rows are computed once and kept (``_WordCache``); a decision is then
a dict lookup per word, two gathers, and the MLP.

The gate (``llmlib.router.gate``) decides before any of that.

``llmlib/router/_routerc.c`` does all of it in C from the prompt's text (built with the
package when a compiler is there; ``Router.native`` says whether it is in use): the split and
lower-casing (ASCII byte by byte; other text with Python's own whitespace test and
lower-case mapping, or its str methods for the two characters whose lower case depends on
more than the character), the gate's keyword look-ups, a word cache of summed int8 rows,
the bigrams and the MLP; ``decide_batch`` is one C call for all its prompts. The gate's
regex rules, prompts that are not ``str`` and lone surrogates come back to Python. The
numpy path is the fallback and the reference the C path is tested against.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router import features
from llmlib.router.features import (
    _MASK32,
    _MIX,
    MAX_WORDS,
    _crc,
    prepare,
    word_features,
)
from llmlib.router.gate import Gate
from llmlib.router.lexicon import lex_index
from llmlib.router.weights import RouterModel, load_model


@dataclass(slots=True)
class Decision:
    """Where a query goes and why. ``source``: gate, mlp, default (the MLP was not
    confident enough), empty (no words) or error (the prompt could not be read)."""

    expert: str
    source: str
    top: list[tuple[str, float]]  # the top-k experts with their probabilities
    confidence: float = 1.0
    margin: float = 1.0
    entropy: float = 0.0


SOURCES = ("mlp", "default", "gate", "empty", "error")  # Decisions.sources codes


@dataclass(slots=True)
class Decisions:
    """Decisions for many prompts, as columns (``Router.decide_columns``): the expert's
    index in ``Router.experts``, the source's index in ``SOURCES``, and where the MLP
    decided (sources mlp and default) its confidence, top-2 margin and entropy (NaN
    elsewhere)."""

    experts: np.ndarray  # int
    sources: np.ndarray  # uint8
    confidence: np.ndarray  # float32
    margin: np.ndarray
    entropy: np.ndarray

    def __len__(self) -> int:
        return len(self.experts)


class _WordCache:
    """Per distinct word: a row holding the sum of its feature embeddings (and, in an extra
    last column, its feature count), its hash, and its hash premixed for bigrams. The rows
    live after the embedding table's own (whose count column is 1) in one matrix, so a
    text's words and bigrams are summed, counts included, with one gather and one product.
    Cleared when full (bounded memory, not an LRU). Not thread-safe: one router per
    thread."""

    def __init__(
        self,
        emb: np.ndarray,
        buckets: int,
        limit: int = 100_000,
        lex_keys: np.ndarray | None = None,
    ) -> None:
        self.emb, self.buckets, self.limit = emb, buckets, limit
        self.lex_keys = lex_keys
        self.index: dict[str, tuple[int, int, int]] = {}
        dim = emb.shape[1]
        width = dim + 1 if lex_keys is None else 2 * dim + 2  # + the lexicon's sum and count
        self.table = np.zeros((buckets + 4096, width), dtype=np.float32)
        self.table[:buckets, :dim] = emb[:buckets]
        self.table[:buckets, dim] = 1.0

    def add(self, word: str) -> tuple[int, int, int]:
        if len(self.index) >= self.limit:
            self.index.clear()
        ids = word_features(word, self.buckets)
        row = self.buckets + len(self.index)
        if row >= len(self.table):
            grown = np.zeros((2 * len(self.table), self.table.shape[1]), dtype=np.float32)
            grown[: len(self.table)] = self.table
            self.table = grown
        dim = self.emb.shape[1]
        self.table[row, :dim] = self.emb[ids].sum(axis=0)
        self.table[row, dim] = len(ids)
        if self.lex_keys is not None:  # the word's lexicon row (after the hashed ones), if any
            at = int(lex_index(self.lex_keys, [word])[0])
            self.table[row, dim + 1 :] = 0.0
            if at >= 0:
                self.table[row, dim + 1 : -1] = self.emb[self.buckets + at]
                self.table[row, -1] = 1.0
        h = _crc("w:" + word)
        entry = (row, h, (h * _MIX) & _MASK32)
        self.index[word] = entry
        return entry


class Router:
    """Decides an expert for a prompt: the gate, else the MLP's top-k with a confidence
    threshold (below it: ``default``) and a load-aware tie-break among near-equal experts.
    ``native`` False forces the numpy path."""

    def __init__(
        self,
        model: RouterModel,
        gate: Gate | None = None,
        default: str | None = None,
        threshold: float = 0.0,
        top_k: int = 2,
        tie_margin: float = 0.0,
        native: bool = True,
    ) -> None:
        self.model = model
        self.experts = model.experts
        self.gate = gate or Gate([])
        self.default = default or model.experts[0]
        for name in [self.default] + [r.expert for r in self.gate.rules]:
            if name not in self.experts:
                raise ConfigError(
                    f"router: unknown expert {name!r}; the model knows {', '.join(self.experts)}"
                )
        self.threshold, self.top_k, self.tie_margin = threshold, max(1, top_k), tie_margin
        # how the threshold was set: "fixed" (a number), or "balanced" (the artifact's,
        # picked on unseen sources at training; router eval picks it again per fold)
        self.threshold_rule = "fixed"
        self._cache = _WordCache(model.emb, model.buckets, lex_keys=model.lex_keys)
        self._ones = np.ones(2 * MAX_WORDS, dtype=np.float32)
        f32 = [np.ascontiguousarray(a, dtype=np.float32) for a in (model.w1, model.b1)]
        f32 += [np.ascontiguousarray(a, dtype=np.float32) for a in (model.w2, model.b2)]
        self._w1, self._b1, self._w2, self._b2 = f32
        self._c = features._C if native else None
        if model.q is not None and model.scale is not None:
            table: tuple[np.ndarray, ...] = (model.q, model.scale)
        else:
            dim = model.emb.shape[1]
            table = (np.ascontiguousarray(model.emb, dtype=np.float32), np.ones(dim, np.float32))
        self._c_model = (
            None if self._c is None else self._c.make_model(*table, *f32, model.lex_keys)
        )
        self._c_gate = None
        if self._c is not None and self.gate.rules:
            regex = sum(1 << k for k in self.gate.regex_rules)
            rule_experts = [self.experts.index(r.expert) for r in self.gate.rules]
            self._c_gate = self._c.make_gate(self.gate.keyword_rule, regex, rule_experts)
        # route_many's answer (an expert index per prompt, 255: Python decides) -> names
        self._names = [*self.experts, *[None] * (256 - len(self.experts))]
        self._default_k = self.experts.index(self.default)

    @property
    def native(self) -> bool:
        return self._c is not None

    # --- features -> logits ----------------------------------------------------------------
    def embed(self, words: list[str]) -> np.ndarray:
        """The mean feature embedding of ``words`` (at least one), by the numpy path: a
        row index per word (its cached sum) and per bigram (the table's own row), one
        gather; the count column gives the divisor."""
        cache = self._cache
        get, add = cache.index.get, cache.add
        idx = array("q")
        put = idx.append
        mod = self.model.buckets
        row, _, mixed = get(words[0]) or add(words[0])
        put(row)
        for w in words[1:]:
            row, h, m = get(w) or add(w)
            put(row)
            put((mixed ^ h) % mod)  # the bigram (previous word, this word)
            mixed = m
        ii = np.frombuffer(idx, dtype=np.int64)
        s = self._ones[: len(ii)] @ cache.table.take(ii, axis=0)
        if cache.lex_keys is None:
            return s[:-1] / s[-1]
        d = self.model.dim  # the hashed rows' mean, then the lexicon rows' (zero: none)
        return np.concatenate([s[:d] / s[d], s[d + 1 : -1] / max(s[-1], 1.0)])

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = x @ self._w1
        h += self._b1
        np.maximum(h, 0, out=h)
        z = h @ self._w2
        z += self._b2
        return z

    def text_logits(self, texts: Sequence[str]) -> np.ndarray:
        """The MLP's logits for each text (numpy path, no gate): (len(texts), experts)."""
        if not texts:
            return np.zeros((0, len(self.experts)), dtype=np.float32)
        return np.stack([self.logits(self.embed(prepare(t) or [""])) for t in texts])

    def word_probs(self, words: list[str]) -> tuple[tuple[float, ...], float]:
        """The experts' probabilities for ``words`` (at least one) and their entropy: in C
        where built, else numpy."""
        if self._c is not None:
            got = self._c.embed_probs(words, self._c_model)
            if got is not None:
                return got  # type: ignore[no-any-return]
        z = self.logits(self.embed(words)).tolist()
        top = max(z)
        ex = [math.exp(v - top) for v in z]
        total = sum(ex)
        probs = tuple(v / total for v in ex)
        return probs, -sum(q * math.log(q) for q in probs if q > 0)

    # --- decisions -------------------------------------------------------------------------
    def decide(
        self,
        text: str | bytes,
        loads: Mapping[str, int] | None = None,
        max_words: int = MAX_WORDS,
    ) -> Decision:
        """The decision for one prompt (its first ``max_words`` words, for incremental
        routing). ``loads``: pending queries per expert, for the tie-break."""
        if self._c is not None and type(text) is str:
            got = self._c.route_text(text, self._c_model, self._c_gate, max_words)
            if got is not None:
                mask, probs, entropy = got
                if mask:
                    hit = self.gate.resolve(mask, text)
                    if hit is not None:
                        return Decision(hit, "gate", [(hit, 1.0)])
                if probs is None:
                    return Decision(self.default, "empty", [], 0.0, 0.0, 0.0)
                return self._choose(probs, entropy, loads)
        words = self._words_or_decision(text, max_words)
        if isinstance(words, Decision):
            return words
        probs, entropy = self.word_probs(words)
        return self._choose(probs, entropy, loads)

    def _words_or_decision(self, text: str | bytes, max_words: int) -> list[str] | Decision:
        """The prompt's words for the MLP, or the decision made without it: unreadable
        or empty (the default expert) or the gate's."""
        try:
            words = prepare(text)[: max(max_words, 0)]
        except (TypeError, ValueError):  # not text: the default expert, never a stop
            return self.unreadable()
        if not words:
            return Decision(self.default, "empty", [], 0.0, 0.0, 0.0)
        if self.gate.rules:
            hit = self.gate.match(words, _as_text(text))
            if hit is not None:
                return Decision(hit, "gate", [(hit, 1.0)])
        return words

    def unreadable(self) -> Decision:
        """The decision for a prompt that could not be read: the default expert."""
        return Decision(self.default, "error", [], 0.0, 0.0, 0.0)

    def _choose(
        self, probs: tuple[float, ...], entropy: float, loads: Mapping[str, int] | None
    ) -> Decision:
        experts = self.experts
        if self.top_k == 2 and len(probs) > 2:  # the usual case, without a sort
            i = max(range(len(probs)), key=probs.__getitem__)
            j = max((c for c in range(len(probs)) if c != i), key=probs.__getitem__)
            order = [i, j]
        else:
            order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)[: self.top_k]
        top = [(experts[c], probs[c]) for c in order]
        best = top[0][1]
        margin = best - top[1][1] if len(top) > 1 else best
        if best < self.threshold:
            return Decision(self.default, "default", top, best, margin, entropy)
        choice = top[0][0]
        if loads and self.tie_margin > 0 and len(top) > 1:
            near = [e for e, q in top if best - q <= self.tie_margin]
            choice = min(near, key=lambda e: (loads.get(e, 0), near.index(e)))
        return Decision(choice, "mlp", top, best, margin, entropy)

    def decide_batch(self, texts: Sequence[str | bytes]) -> list[str]:
        """Experts for many prompts (no loads, no top-k: each prompt's best expert, or the
        default below the threshold); in C in one call where built."""
        if self._c is not None:
            got, _ = self._c.route_many(
                list(texts), self._c_model, self._c_gate, self.threshold, self._default_k,
                MAX_WORDS, None,
            )  # fmt: skip
            out = list(map(self._names.__getitem__, got))
            if None in out:  # not str, a lone surrogate, a regex rule hit: one by one
                for k, name in enumerate(out):
                    if name is None:
                        out[k] = self.decide(texts[k]).expert
            return out  # type: ignore[return-value]
        return [self.decide(t).expert for t in texts]

    def decide_columns(
        self,
        texts: Sequence[str | bytes],
        loads: Mapping[str, int] | None = None,
        max_words: int = MAX_WORDS,
    ) -> Decisions:
        """What ``decide`` gives each prompt (the same loads for all: the tie-break reads
        them once), as columns; the features, gate and MLP in one C call where built."""
        n, k = len(texts), len(self.experts)
        conf = np.full(n, np.nan, dtype=np.float32)
        margin, entropy = conf.copy(), conf.copy()
        if self._c is None:
            experts = np.zeros(n, dtype=np.int64)
            sources = np.zeros(n, dtype=np.uint8)
            redo: range | list[int] = range(n)
        else:
            probs = np.zeros((n, k), dtype=np.float32)
            got, src = self._c.route_many(
                list(texts), self._c_model, self._c_gate, self.threshold, self._default_k,
                max_words, probs,
            )  # fmt: skip
            experts = np.frombuffer(got, dtype=np.uint8).astype(np.int64)
            sources = np.frombuffer(src, dtype=np.uint8).copy()
            rows = np.flatnonzero(sources <= 1)  # the MLP decided (mlp, default)
            if len(rows):
                p = probs[rows]
                order = np.argsort(-p, axis=1, kind="stable")
                top1 = np.take_along_axis(p, order[:, :1], axis=1)[:, 0]
                top2 = np.take_along_axis(p, order[:, 1:2], axis=1)[:, 0] if k > 1 else 0.0
                conf[rows], margin[rows] = top1, top1 - top2
                with np.errstate(divide="ignore", invalid="ignore"):
                    entropy[rows] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
                if loads and self.tie_margin > 0 and self.top_k > 1 and k > 1:
                    near = rows[(sources[rows] == 0) & (top1 - top2 <= self.tie_margin)]
                    for j in near.tolist():  # few: decided as decide does
                        experts[j] = self.experts.index(
                            self._choose(tuple(probs[j].tolist()), 0.0, loads).expert
                        )
            redo = np.flatnonzero(sources == 255).tolist()
        code = {name: c for c, name in enumerate(SOURCES)}
        for j in redo:  # the numpy path, or what C handed back
            d = self.decide(texts[j], loads, max_words)
            experts[j], sources[j] = self.experts.index(d.expert), code[d.source]
            if d.source in ("mlp", "default"):
                conf[j], margin[j], entropy[j] = d.confidence, d.margin, d.entropy
        return Decisions(experts, sources, conf, margin, entropy)


def _as_text(text: str | bytes) -> str:
    return text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")


def load_router(
    path: str | Path,
    gate_rules: Iterable[Mapping[str, Any]] = (),
    default: str | None = None,
    precision: str = "int8",
    threshold: float = 0.0,
    top_k: int = 2,
    tie_margin: float = 0.0,
) -> Router:
    model, _ = load_model(path, precision)
    return Router(model, Gate.from_config(gate_rules), default, threshold, top_k, tie_margin)
