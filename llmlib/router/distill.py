"""Distilling a sentence encoder into the router: MiniLM + logistic regression (the baseline
extra, run only at training time) is trained on the labelled rows, labels a pool of
unlabelled prompts, and the labels it gives with enough confidence become extra training
rows for the hashed MLP, whose decision cost does not change.

The pool is human turns of ShareGPT conversations (every turn, not only the first), minus
the corpus's own prompts: text from the registry package, never from a held-out source, so
a source-held-out evaluation stays honest.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np


def unlabeled_pool(exclude: set[str], n: int, seed: int = 0) -> list[str]:
    """``n`` human turns of ShareGPT conversations (seeded), none of them in ``exclude``."""
    from llmlib.data.text_sources import read_sharegpt

    convs, _ = read_sharegpt(None)
    seen: set[str] = set()
    turns = []
    for c in convs:
        for t in c.get("conversations") or ():
            text = (t.get("value") or "").strip() if isinstance(t, dict) else ""
            if t.get("from") == "human" and text and text not in exclude and text not in seen:
                seen.add(text)
                turns.append(text)
    rng = random.Random(seed)
    return rng.sample(turns, min(n, len(turns)))


class Teacher:
    """MiniLM sentence embeddings (cached per text) and a logistic regression per fit."""

    def __init__(self) -> None:
        from llmlib.router.evaluation import load_minilm

        self.st = load_minilm()
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            vecs = self.st.encode(todo, batch_size=64, normalize_embeddings=True)
            self.cache.update(zip(todo, vecs, strict=True))
        return np.stack([self.cache[t] for t in texts])

    def pseudo_rows(
        self, rows: list[dict[str, Any]], pool: list[str], min_confidence: float = 0.6
    ) -> list[dict[str, Any]]:
        """The pool's prompts labelled by a regression fitted on ``rows`` (the labels it
        gives with at least ``min_confidence``), as training rows of source "distilled"."""
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=2000, class_weight="balanced")
        clf.fit(self.encode([r["text"] for r in rows]), [r["label"] for r in rows])
        probs = clf.predict_proba(self.encode(pool))
        best = probs.argmax(axis=1)
        return [
            {"text": t, "label": str(clf.classes_[k]), "source": "distilled", "split": "train"}
            for t, k, p in zip(pool, best, probs.max(axis=1), strict=True)
            if p >= min_confidence
        ]
