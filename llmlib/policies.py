"""Traffic policies: which core of an ``LLMServer`` pool takes each request.

A policy is a small strategy object. ``assign`` gets the batch and a snapshot of each core's
pending count (which it updates as it assigns, so one batch spreads out) and returns the
core index for every request. The batch may be a ``RequestBatch``: a policy that does not
read the requests should not iterate it (that builds every request object). Random
policies own a seeded ``random.Random``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from typing import ClassVar

from .errors import UnknownNameError
from .prefix import BlockSet, blocks_of
from .request import LLMRequest


class TrafficPolicy:
    name: ClassVar[str] = "abstract"

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        self.num_cores = num_cores

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        raise NotImplementedError


class RoundRobin(TrafficPolicy):
    """Each request to the next core in turn; the turn carries over between batches."""

    name = "round_robin"

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self._next = 0

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        n, start = self.num_cores, self._next
        out = [(start + i) % n for i in range(len(requests))]
        self._next = (start + len(requests)) % n
        return out


class LeastPending(TrafficPolicy):
    """Each request to the core with the fewest pending requests (NVIDIA's load_balancing);
    ties go to the lowest index."""

    name = "least_pending"

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        n = len(requests)
        if self.num_cores == 1:
            loads[0] += n
            return [0] * n
        # a heap of (pending, core): its top is the core with the fewest, the lowest index
        # on a tie, as a scan would pick (O(log cores) per request, not O(cores))
        heap = [(load, i) for i, load in enumerate(loads)]
        heapq.heapify(heap)
        replace = heapq.heapreplace
        out: list[int] = []
        append = out.append
        for _ in range(n):
            load, i = heap[0]
            replace(heap, (load + 1, i))
            append(i)
        for load, i in heap:
            loads[i] = load
        return out


class PowerOfTwo(TrafficPolicy):
    """Two cores drawn at random (seeded); the one with fewer pending requests wins."""

    name = "power_of_two"

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self._rng = random.Random(seed)

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        n, rng, out = self.num_cores, self._rng, []
        for _ in range(len(requests)):
            if n == 1:
                i = 0
            else:
                a, b = rng.sample(range(n), 2)
                i = a if loads[a] <= loads[b] else b
            loads[i] += 1
            out.append(i)
        return out


def _fewest(loads: list[int]) -> int:
    return min(range(len(loads)), key=loads.__getitem__)


class CacheAware(TrafficPolicy):
    """Prefix locality first, load when it matters (in the manner of SGLang's cache-aware
    router): each core's recently sent prompt blocks (``llmlib.prefix``: chained hashes of
    token blocks) are remembered; a request goes to the core holding the longest share of
    its blocks when that share is at least ``match_threshold``, else to the core with the
    fewest pending. When the pool is imbalanced (the busiest core has ``balance_abs`` more
    pending than the idlest and ``balance_rel`` times as many) it goes to the fewest
    pending regardless."""

    name = "cache_aware"
    match_threshold = 0.5
    balance_abs = 8
    balance_rel = 1.5
    capacity_blocks = 1 << 16

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self.sent = [BlockSet(self.capacity_blocks) for _ in range(num_cores)]
        self.cache_routed = 0
        self._blocks: dict[int, tuple[object, tuple[int, ...]]] = {}

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        out: list[int] = []
        sent, cores = self.sent, range(self.num_cores)
        for req in requests:
            blocks = blocks_of(req, self._blocks)
            lo, hi = min(loads), max(loads)
            i = -1
            if blocks and not (hi - lo > self.balance_abs and hi > self.balance_rel * lo):
                matched = [s.matched(blocks) for s in sent]
                best = max(cores, key=lambda c: (matched[c], -loads[c], -c))
                if matched[best] >= self.match_threshold * len(blocks):
                    i = best
                    self.cache_routed += 1
            if i < 0:
                i = _fewest(loads)
            loads[i] += 1
            sent[i].add(blocks)
            out.append(i)
        return out


class KVAware(TrafficPolicy):
    """The lowest cost wins: the request's blocks a core does not hold (prefill it would
    redo; from what this policy sent each core, ``llmlib.prefix``) plus ``load_weight``
    blocks per request pending there (the decode load it would join)."""

    name = "kv_aware"
    load_weight = 4.0
    capacity_blocks = 1 << 16

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self.sent = [BlockSet(self.capacity_blocks) for _ in range(num_cores)]
        self._blocks: dict[int, tuple[object, tuple[int, ...]]] = {}

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        out: list[int] = []
        sent, w = self.sent, self.load_weight
        for req in requests:
            blocks = blocks_of(req, self._blocks)
            n = len(blocks)
            cost = [n - sent[c].matched(blocks) + w * loads[c] for c in range(self.num_cores)]
            i = min(range(self.num_cores), key=cost.__getitem__)
            loads[i] += 1
            sent[i].add(blocks)
            out.append(i)
        return out


POLICIES: dict[str, type[TrafficPolicy]] = {
    p.name: p for p in (RoundRobin, LeastPending, PowerOfTwo, CacheAware, KVAware)
}

DEFAULT_POLICY = {
    "offline": "round_robin",
    "server": "least_pending",
    "singlestream": "least_pending",
}


def make_policy(name: str, num_cores: int, seed: int = 0) -> TrafficPolicy:
    if name not in POLICIES:
        raise UnknownNameError("traffic distribution policy", name, POLICIES)
    return POLICIES[name](num_cores, seed)
