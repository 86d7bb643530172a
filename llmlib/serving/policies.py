"""Traffic policies: which core of an ``LLMServer`` pool takes each request.

A policy is a small strategy object. ``assign`` gets the batch and a snapshot of each core's
pending count (which it updates as it assigns, so one batch spreads out) and returns the
core index for every request. The batch may be a ``RequestBatch``: a policy that does not
read the requests should not iterate it (that builds every request object). Random
policies own a seeded ``random.Random``.

A policy may also read each core's live ``Telemetry`` (TTFT and TPOT moving averages,
``llmlib.serving.core``): the pool binds them once (``bind``); the simulator binds its engines'.
Tunables are class attributes named in ``tunables``, set per pool from a flag string
(``--policy_flags``, ``make_policy(..., flags=)``). ``stats`` says what a policy did
(prefix-aware ones: requests routed by locality, and migrations: requests sent away from
the one core holding most of their prefix).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from typing import Any

from llmlib.errors import UnknownNameError
from llmlib.serving.core import Telemetry
from llmlib.serving.policy_base import BREAKER_TUNABLES, TrafficPolicy
from llmlib.serving.predicted import PredictedWork
from llmlib.serving.prefix import BlockSet, blocks_of
from llmlib.serving.request import LLMRequest

__all__ = ["BREAKER_TUNABLES", "POLICIES", "PredictedWork", "TrafficPolicy", "make_policy"]


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


def _home(matched: list[int], n_blocks: int, threshold: float) -> int:
    """The one core holding the most of a request's blocks, at least ``threshold`` of them
    (-1: none, or a tie: a prefix every core holds, such as a shared system prompt, gives
    no home)."""
    best = max(matched)
    if best == 0 or best < threshold * n_blocks or matched.count(best) > 1:
        return -1
    return matched.index(best)


class _PrefixPolicy(TrafficPolicy):
    """Per-core sets of the blocks sent there, and the counts ``stats`` reports."""

    capacity_blocks = 1 << 16
    match_threshold = 0.5

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self.sent = [BlockSet(self.capacity_blocks) for _ in range(num_cores)]
        self._blocks: dict[int, tuple[object, tuple[int, ...]]] = {}
        self.cache_routed = 0  # sent to their home
        self.migrations = 0  # sent away from their home

    def _place(self, i: int, blocks: tuple[int, ...], matched: list[int], loads: list[int]) -> int:
        """Book request blocks on core ``i`` (counted as routed home or migrated when they
        have a home) and return ``i``."""
        if blocks:
            home = _home(matched, len(blocks), self.match_threshold)
            if home >= 0:
                if home == i:
                    self.cache_routed += 1
                else:
                    self.migrations += 1
        loads[i] += 1
        self.sent[i].add(blocks)
        return i

    def stats(self) -> dict[str, Any]:
        return {"cache_routed": self.cache_routed, "migrations": self.migrations}


class CacheAware(_PrefixPolicy):
    """Prefix locality first, load when it matters (in the manner of SGLang's cache-aware
    router): each core's recently sent prompt blocks (``llmlib.serving.prefix``: chained hashes of
    token blocks) are remembered; a request goes to the core holding the longest share of
    its blocks when that share is at least ``match_threshold``, else to the core with the
    fewest pending. When the pool is imbalanced (the busiest core has ``balance_abs`` more
    pending than the idlest and ``balance_rel`` times as many) it goes to the fewest
    pending regardless."""

    name = "cache_aware"
    tunables = ("match_threshold", "balance_abs", "balance_rel")
    balance_abs = 8
    balance_rel = 1.5

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        out: list[int] = []
        sent, cores = self.sent, range(self.num_cores)
        for req in requests:
            blocks = blocks_of(req, self._blocks)
            lo, hi = min(loads), max(loads)
            i = -1
            matched: list[int] = []
            if blocks:
                matched = [s.matched(blocks) for s in sent]
                if not (hi - lo > self.balance_abs and hi > self.balance_rel * lo):
                    best = max(cores, key=lambda c: (matched[c], -loads[c], -c))
                    if matched[best] >= self.match_threshold * len(blocks):
                        i = best
            if i < 0:
                i = _fewest(loads)
            out.append(self._place(i, blocks, matched, loads))
        return out


class KVAware(_PrefixPolicy):
    """The lowest cost wins: the request's blocks a core does not hold (prefill it would
    redo; from what this policy sent each core, ``llmlib.serving.prefix``) plus ``load_weight``
    blocks per request pending there (the decode load it would join)."""

    name = "kv_aware"
    tunables = ("load_weight",)
    load_weight = 4.0

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        out: list[int] = []
        sent, w, cores = self.sent, self.load_weight, range(self.num_cores)
        for req in requests:
            blocks = blocks_of(req, self._blocks)
            n = len(blocks)
            matched = [s.matched(blocks) for s in sent]
            cost = [n - matched[c] + w * loads[c] for c in cores]
            i = min(cores, key=cost.__getitem__)
            out.append(self._place(i, blocks, matched, loads))
        return out


class TelemetryPolicy(_PrefixPolicy):
    """One score per core from what the pool measures, lowest wins:

        queue_weight * (pending + 1) / max(1, mean pending) * pace   (its queue, at its pace)
        + hot_penalty * how far over its target each moving average is (the pool's thresholds)
        + locality_weight * share of the prompt's blocks it lacks    (prefill it would redo)

    ``pace`` is the core's ``ttft_ewma / ttft_target_ms + tpot_ewma / tpot_target_ms`` over
    the pool's mean of the same (1: as fast as the pool), kept within 1/4..4; a core with no
    measurement yet counts as the mean. Pace multiplies the queue rather than adding to it:
    an idle core scores low whatever its last moving averages said, so traffic returns to it
    and its numbers are measured afresh (an added latency term would starve a core whose
    averages went stale while it was idle). A request with a home (the one core holding
    most of its prefix, at least ``match_threshold`` of its blocks) stays there unless the
    best core scores ``migration_gap`` lower and the migration budget has a token: each
    request adds ``migration_rate`` tokens, at most ``migration_burst`` kept. A moved
    request is a migration (``stats``). Each pool has its own targets and settings
    (``--policy_flags``; a disaggregated run's decode pool ``--decode_policy_flags``)."""

    name = "telemetry"
    uses_telemetry = True
    tunables = (
        "ttft_target_ms", "tpot_target_ms", "hot_penalty", "queue_weight", "locality_weight",
        "migration_gap", "migration_rate", "migration_burst", "match_threshold",
    )  # fmt: skip
    ttft_target_ms = 1000.0
    tpot_target_ms = 100.0
    hot_penalty = 1.0
    queue_weight = 1.0
    locality_weight = 1.0
    migration_gap = 1.0
    migration_rate = 0.1
    migration_burst = 32.0

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        self._tokens = 0.0
        self.held = 0  # kept at home though a core scored better (gap or budget)
        self._seen = -1
        self._pace: tuple[list[float], list[float]] | None = None

    def bind(self, telemetry: Sequence[Telemetry]) -> None:
        super().bind(telemetry)
        self._pace = None

    def pace(self) -> tuple[list[float], list[float]]:
        """Each core's pace (its served latency over the pool's mean) and hot penalty
        (recomputed only when some core has observed something since)."""
        seen = sum(t.observed for t in self.telemetry)
        if seen != self._seen or self._pace is None:
            self._seen, self._pace = seen, self._compute_pace()
        return self._pace

    def _compute_pace(self) -> tuple[list[float], list[float]]:
        n = self.num_cores
        served = [0.0] * n
        hot = [0.0] * n
        for attr, target_ms in (("ttft_ewma_ns", self.ttft_target_ms),
                                ("tpot_ewma_ns", self.tpot_target_ms)):  # fmt: skip
            vals = [getattr(t, attr) for t in self.telemetry]
            seen = [v for v in vals if v is not None]
            if not seen or target_ms <= 0:
                continue
            target, mean = target_ms * 1e6, sum(seen) / len(seen)
            for c, v in enumerate(vals):
                v = mean if v is None else v
                served[c] += v / target
                if v > target:  # by how far over: a step would swing traffic to and fro
                    hot[c] += self.hot_penalty * min(1.0, v / target - 1.0)
        mean = sum(served) / n
        if mean <= 0:
            return [1.0] * n, hot
        return [min(2.0, max(0.5, (x / mean) ** 0.5)) for x in served], hot

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        out: list[int] = []
        sent, cores = self.sent, range(self.num_cores)
        pace, hot = self.pace()  # moving averages change as answers come, not per request
        qw, lw = self.queue_weight, self.locality_weight
        for req in requests:
            blocks = blocks_of(req, self._blocks)
            n = len(blocks)
            matched = [s.matched(blocks) for s in sent] if n else [0] * self.num_cores
            scale = qw / max(1.0, sum(loads) / self.num_cores)
            score = [
                scale * (loads[c] + 1) * pace[c]
                + hot[c]
                + (lw * (n - matched[c]) / n if n else 0.0)
                for c in cores
            ]
            best = min(cores, key=lambda c: (score[c], loads[c], c))
            i = best
            self._tokens = min(self._tokens + self.migration_rate, self.migration_burst)
            home = _home(matched, n, self.match_threshold) if n else -1
            if home >= 0 and home != best:
                # (1e-9: ten tokens of 0.1 add up to 0.999...)
                if score[home] - score[best] > self.migration_gap and self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                else:
                    i = home
                    self.held += 1
            out.append(self._place(i, blocks, matched, loads))
        return out

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "held": self.held}


POLICIES: dict[str, type[TrafficPolicy]] = {
    p.name: p
    for p in (
        RoundRobin,
        LeastPending,
        PowerOfTwo,
        CacheAware,
        KVAware,
        TelemetryPolicy,
        PredictedWork,
    )  # fmt: skip
}
# every policy's tunables, for the flag-string schema (make_policy checks the policy's own)
POLICY_FLAGS: dict[str, type] = {
    k: type(getattr(p, k)) for p in POLICIES.values() for k in (*p.tunables, *BREAKER_TUNABLES)
}

DEFAULT_POLICY = {
    "offline": "round_robin",
    "server": "least_pending",
    "singlestream": "least_pending",
}


def make_policy(
    name: str, num_cores: int, seed: int = 0, flags: Mapping[str, Any] | None = None
) -> TrafficPolicy:
    if name not in POLICIES:
        raise UnknownNameError("traffic distribution policy", name, POLICIES)
    policy = POLICIES[name](num_cores, seed)
    if flags:
        policy.configure(flags)
    return policy
