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


POLICIES: dict[str, type[TrafficPolicy]] = {
    p.name: p for p in (RoundRobin, LeastPending, PowerOfTwo)
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
