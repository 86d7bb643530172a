"""Deterministic pseudo output tokens for backends that do not generate real ones."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

POOL_SIZE = 1 << 17
FIRST_ID = 3  # ids 0..2 are left for pad / bos / eos, so pseudo tokens never hold an EOS


@lru_cache(maxsize=8)
def _pool(seed: int, vocab_size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(FIRST_ID, max(vocab_size, FIRST_ID + 1), POOL_SIZE, dtype=np.uint32)


def pseudo_tokens(seed: int, vocab_size: int, sample_index: int, n: int) -> np.ndarray:
    """``n`` token ids that depend only on (seed, vocab_size, sample_index): the same sample
    gets the same tokens on any core, in any run. A view into a shared pool (no copy)."""
    pool = _pool(seed, vocab_size)
    n = max(0, min(n, POOL_SIZE))
    start = (sample_index * 7919) % (POOL_SIZE - n + 1)
    return pool[start : start + n]
