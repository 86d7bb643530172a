"""Prefix locality without engine internals: stable, chained hashes of token blocks.

A prompt's full blocks of ``BLOCK_TOKENS`` tokens each get a 64-bit hash that covers the
block's tokens *and every block before it* (the previous block's hash is mixed in), so two
prompts share their first k block hashes exactly when they share their first k blocks of
tokens. Traffic policies compare these against what they sent each core; the engine model's
prefix cache keeps them as its KV blocks. The hashes are arithmetic on integers (no
Python ``hash``, which is salted): the same in every process and on every machine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

BLOCK_TOKENS = 16  # tokens per KV block: the unit of prefix reuse

_M64 = (1 << 64) - 1
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xBF58476D1CE4E5B9
_POW = np.array([pow(31, BLOCK_TOKENS - 1 - i, 1 << 64) for i in range(BLOCK_TOKENS)], np.uint64)


def _fin(z: int) -> int:
    """splitmix64's finaliser (a bijection on 64-bit integers)."""
    z = ((z ^ (z >> 30)) * _K2) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def mix(h: int, x: int) -> int:
    """Fold ``x`` into the running hash ``h`` (both 64-bit). ``h`` is scrambled before
    ``x`` joins it, so mix(a, b) and mix(b, a) differ."""
    return _fin((_fin(h + _K1) + x) & _M64)


def token_blocks(tokens: Any) -> tuple[int, ...]:
    """Chained hashes of the full ``BLOCK_TOKENS``-token blocks of ``tokens`` (any integer
    sequence); a trailing partial block has none (engines do not share it either)."""
    arr = np.asarray(tokens, dtype=np.uint64)
    n = len(arr) // BLOCK_TOKENS
    if n == 0:
        return ()
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the point
        per_block = (arr[: n * BLOCK_TOKENS].reshape(n, BLOCK_TOKENS) * _POW).sum(axis=1)
    out, h = [], 0
    for v in per_block.tolist():
        h = mix(h, v)
        out.append(h)
    return tuple(out)


def blocks_of(
    request: Any, cache: dict[int, tuple[Any, tuple[int, ...]]] | None = None
) -> tuple[int, ...]:
    """A request's block hashes: its ``blocks`` when it carries them (the simulator's
    requests), else computed from its ``input_tokens``; with ``cache``, once per sample
    (LoadGen issues the same samples again and again; the token object is the guard)."""
    got = getattr(request, "blocks", None)
    if got is not None:
        return got  # type: ignore[no-any-return]
    tokens = getattr(request, "input_tokens", ())
    if cache is None:
        return token_blocks(tokens)
    index = getattr(request, "sample_index", None)
    hit = cache.get(index) if index is not None else None
    if hit is not None and hit[0] is tokens:
        return hit[1]
    blocks = token_blocks(tokens)
    if index is not None:
        cache[index] = (tokens, blocks)
    return blocks


class BlockSet:
    """The blocks a policy has sent one core recently: an LRU of block hashes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def matched(self, blocks: Sequence[int]) -> int:
        """How many leading ``blocks`` this set holds. A chained hash present means its
        whole prefix was sent here, so a binary search finds the edge (evictions can leave
        holes; the answer is then a lower edge, which is all a policy needs)."""
        lru = self._lru
        lo, hi = 0, len(blocks)  # blocks[:lo] held; blocks[hi:] not known to be
        if hi == 0 or blocks[0] not in lru:
            return 0
        lo = 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if blocks[mid - 1] in lru:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def add(self, blocks: Sequence[int]) -> None:
        lru = self._lru
        for b in blocks:
            lru[b] = None
            lru.move_to_end(b)
        while len(lru) > self.capacity:
            lru.popitem(last=False)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_K2)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def chat_blocks(system: int, conversation: int, system_len: int, length: int) -> list[int]:
    """Block hashes of a synthetic chat transcript ``length`` tokens long: the first
    ``system_len`` tokens are system prompt ``system`` (shared by every conversation that
    uses it), the rest belong to ``conversation`` alone. A block wholly inside the system
    prompt hashes (system, block) and is the same in every such transcript; a later block
    hashes (conversation, block), unique to it: what a chained hash of the tokens would
    tell apart, without the tokens."""
    n_sys = system_len // BLOCK_TOKENS
    n = length // BLOCK_TOKENS
    b = np.arange(n, dtype=np.uint64)
    own = mix(2, mix(system, conversation))
    owner = np.where(b < n_sys, np.uint64(mix(1, system)), np.uint64(own))
    return _splitmix(owner + b * np.uint64(_K1)).tolist()  # type: ignore[no-any-return]
