"""A serving fleet in virtual time: engines from the dummy core's engine model, requests from
a seeded arrival process, and a traffic policy from ``llmlib.policies`` (the same code the
live ``LLMServer`` runs) choosing an engine for each arrival.

Time never waits on a clock: the loop keeps a heap of each engine's next step boundary,
advances only the engines due before the next arrival, hands that arrival to the policy
(with each engine's pending count, as ``LLMServer`` does), and submits it. Engines advance
pure-decode stretches as one span (``engine_model``), so the cost is per event, not per
token. Same inputs and seed, same output, to the nanosecond.

Results (``SimResult.summary``): TTFT and TPOT percentiles, goodput (requests per second
meeting the TTFT and TPOT limits) and goodput per dollar (from each engine's price per
hour), queue depth over time, each engine's requests (and the busiest over the mean), and the prefix
cache's hit rate.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engine_model import BLOCK_TOKENS, EngineProfile, make_model
from .errors import ConfigError
from .policies import make_policy
from .prefix import chat_blocks


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival_ns: int
    prompt_len: int
    output_len: int
    blocks: tuple[int, ...] = ()  # chained hashes of its prompt's blocks (llmlib.prefix)


@dataclass(frozen=True)
class EngineSpec:
    """``count`` engines of ``profile``, each costing ``price_per_hour`` (any currency)."""

    profile: EngineProfile
    count: int = 1
    price_per_hour: float = 0.0


def _lengths(rng: random.Random, median: int, sigma: float, cap: int) -> int:
    """A log-normal length around ``median`` (``sigma`` 0: exactly the median), 1..cap."""
    if sigma <= 0:
        return max(1, min(cap, median))
    return max(1, min(cap, int(round(median * math.exp(rng.gauss(0.0, sigma))))))


def arrivals(
    n: int,
    rate_per_s: float,
    process: str = "poisson",
    seed: int = 0,
    prompt_len: int = 512,
    output_len: int = 128,
    length_sigma: float = 0.5,
    burst_cv: float = 3.0,
    max_len: int = 8192,
) -> list[SimRequest]:
    """``n`` requests at ``rate_per_s`` on average: ``poisson`` (exponential gaps) or
    ``bursty`` (gamma gaps with coefficient of variation ``burst_cv``: clumps and lulls at
    the same mean rate); prompt and output lengths log-normal around their medians."""
    if n < 0 or rate_per_s <= 0:
        raise ConfigError("arrivals: need n >= 0 and a rate above 0")
    if process not in ("poisson", "bursty"):
        raise ConfigError(f"arrival process must be poisson or bursty, not {process!r}")
    rng = random.Random(seed)
    mean_gap = 1e9 / rate_per_s
    if process == "bursty":
        shape = 1.0 / (burst_cv * burst_cv)
        gap = lambda: rng.gammavariate(shape, mean_gap / shape)  # noqa: E731
    else:
        gap = lambda: rng.expovariate(1.0 / mean_gap)  # noqa: E731
    t = 0.0
    out = []
    for _ in range(n):
        t += gap()
        out.append(
            SimRequest(
                int(t),
                _lengths(rng, prompt_len, length_sigma, max_len),
                _lengths(rng, output_len, length_sigma, max_len),
            )
        )
    return out


def chat_arrivals(
    n: int,
    rate_per_s: float,
    seed: int = 0,
    systems: int = 8,
    system_len: int = 1024,
    turns: float = 4.0,
    user_len: int = 128,
    output_len: int = 128,
    think_s: float = 10.0,
    length_sigma: float = 0.5,
    max_len: int = 16384,
) -> list[SimRequest]:
    """Multi-turn chats with shared prefixes, ``n`` requests at ``rate_per_s`` on average:
    conversations start as a Poisson process, each on one of ``systems`` system prompts of
    ``system_len`` tokens (shared across conversations), with a geometric number of turns
    (mean ``turns``) ``think_s`` apart on average (open loop). Turn t's prompt is the whole
    transcript so far plus a new user message, so it shares every earlier block with turn
    t-1 and its system prompt's blocks with other conversations."""
    if n < 0 or rate_per_s <= 0 or turns < 1 or systems < 1:
        raise ConfigError("chat_arrivals: need n >= 0, rate > 0, turns >= 1, systems >= 1")
    rng = random.Random(seed)
    start_gap = turns / rate_per_s
    p_more = 1.0 - 1.0 / turns
    warm = 3.0 * turns * think_s  # starts from -warm: the rate is steady from time 0
    # first the plan (cheap): per turn (arrival s, conversation, prompt and output tokens)
    turns_at: list[tuple[float, int, int, int]] = []
    convs: list[tuple[int, int]] = []  # per conversation: (system, transcript tokens)
    t, made = -warm, 0
    cutoff = math.inf  # once n have come after 0: the n-th earliest; no later start is sooner
    while t <= cutoff:
        t += rng.expovariate(1.0 / start_gap)
        conv, system = len(convs), rng.randrange(systems)
        at, length = t, system_len
        while True:
            prompt = min(length + _lengths(rng, user_len, length_sigma, max_len), max_len)
            out_len = _lengths(rng, output_len, length_sigma, max_len)
            if at >= 0:
                turns_at.append((at, conv, prompt, out_len))
                made += 1
            length = prompt + out_len
            if rng.random() >= p_more:
                break
            at += rng.expovariate(1.0 / think_s)
        convs.append((system, min(length, max_len)))
        if made >= n and cutoff == math.inf:
            cutoff = sorted(x[0] for x in turns_at)[n - 1] if n else -math.inf
    turns_at.sort()
    # then the blocks, only for the n kept (each conversation's chain made once)
    chains: dict[int, list[int]] = {}
    out: list[SimRequest] = []
    for at, conv, prompt, out_len in turns_at[:n]:
        chain = chains.get(conv)
        if chain is None:
            system, total = convs[conv]
            chain = chains[conv] = chat_blocks(system, conv, system_len, total)
        blocks = tuple(chain[: prompt // BLOCK_TOKENS])
        out.append(SimRequest(int(at * 1e9), prompt, out_len, blocks))
    return out


@dataclass
class SimResult:
    """Per request: engine, first-token and final times (ns); the engines' names and prices."""

    requests: Sequence[SimRequest]
    engine: np.ndarray
    first_ns: np.ndarray
    final_ns: np.ndarray
    engine_names: list[str]
    prices: list[float]
    policy: str
    depth: list[tuple[int, int]] = field(default_factory=list)  # (time, requests in system)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engines' prefix caches spared

    def summary(self, ttft_limit_ms: float = 0.0, tpot_limit_ms: float = 0.0) -> dict[str, Any]:
        arr = np.array([r.arrival_ns for r in self.requests], dtype=np.int64)
        outs = np.array([r.output_len for r in self.requests], dtype=np.int64)
        ttft = (self.first_ns - arr) / 1e6
        multi = outs > 1
        tpot = np.zeros(len(arr))
        tpot[multi] = (self.final_ns[multi] - self.first_ns[multi]) / (outs[multi] - 1) / 1e6
        span_s = max(int(self.final_ns.max() - arr.min()), 1) / 1e9 if len(arr) else 1.0
        good = np.ones(len(arr), dtype=bool)
        if ttft_limit_ms > 0:
            good &= ttft <= ttft_limit_ms
        if tpot_limit_ms > 0:
            good &= ~multi | (tpot <= tpot_limit_ms)
        goodput = float(good.sum()) / span_s
        per_hour = float(sum(self.prices))
        counts = np.bincount(self.engine, minlength=len(self.engine_names))

        def pct(x: np.ndarray) -> dict[str, float]:
            if not len(x):
                return {}
            return {f"p{q}": float(np.percentile(x, q)) for q in (50, 95, 99)}

        return {
            "policy": self.policy,
            "requests": int(len(arr)),
            "span_s": span_s,
            "throughput_rps": len(arr) / span_s,
            "ttft_ms": pct(ttft),
            "tpot_ms": pct(tpot[multi]),
            "limits_ms": {"ttft": ttft_limit_ms, "tpot": tpot_limit_ms},
            "goodput_rps": goodput,
            "prefix_hit_rate": self.cached_tokens / self.prompt_tokens
            if self.prompt_tokens
            else 0.0,
            "price_per_hour": per_hour,
            "goodput_per_dollar": goodput * 3600.0 / per_hour if per_hour > 0 else None,
            "per_engine": {
                "names": self.engine_names,
                "requests": counts.tolist(),
                "busiest_over_mean": float(counts.max() / counts.mean()) if counts.sum() else 0.0,
            },
            "queue_depth": {
                "max": max((d for _, d in self.depth), default=0),
                "over_time": [[t / 1e9, d] for t, d in self.depth],
            },
        }


def simulate(
    requests: Sequence[SimRequest],
    engines: Sequence[EngineSpec],
    policy: str = "least_pending",
    seed: int = 0,
    depth_points: int = 200,
    placement: Sequence[int] | None = None,
) -> SimResult:
    """Run ``requests`` through the engines, each arrival placed by ``policy``, or on the
    engine ``placement`` gives it (a recorded run's own choices)."""
    profiles: list[EngineProfile] = []
    prices: list[float] = []
    for spec in engines:
        if spec.count < 1:
            raise ConfigError(f"engine {spec.profile.name}: count must be at least 1")
        if spec.profile.is_zero:
            raise ConfigError("the zero profile answers at once: nothing to simulate")
        profiles += [spec.profile] * spec.count
        prices += [spec.price_per_hour] * spec.count
    if not profiles:
        raise ConfigError("simulate: no engines")
    n_eng, n = len(profiles), len(requests)
    models = [make_model(p) for p in profiles]
    chooser = make_policy(policy, n_eng, seed)
    if placement is not None and (
        len(placement) != n or any(not 0 <= e < n_eng for e in placement)
    ):
        raise ConfigError(f"placement: {n} engine indices below {n_eng} expected")
    pending = [0] * n_eng
    engine = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    final = np.zeros(n, dtype=np.int64)
    wake: list[int | None] = [None] * n_eng
    heap: list[tuple[int, int]] = []  # (next step boundary, engine); stale entries skipped
    push, pop = heapq.heappush, heapq.heappop
    in_system = 0
    every = max(1, n // max(depth_points, 1))
    depth: list[tuple[int, int]] = []

    def run(e: int, until: int) -> None:
        nonlocal in_system
        for t, sid, is_final in models[e].advance(until):
            if is_final:
                final[sid] = t
                pending[e] -= 1
                in_system -= 1
            else:
                first[sid] = t
        w = models[e].next_wakeup_ns()
        wake[e] = w
        if w is not None:
            push(heap, (w, e))

    for k, req in enumerate(requests):
        t = req.arrival_ns
        while heap and heap[0][0] <= t:
            w, e = pop(heap)
            if wake[e] == w:
                run(e, t)
        e = chooser.assign([req], list(pending))[0] if placement is None else placement[k]  # type: ignore[list-item]
        engine[k] = e
        models[e].submit(k, t, req.prompt_len, req.output_len, req.blocks)
        pending[e] += 1
        in_system += 1
        due = models[e].next_wakeup_ns()
        if due is not None and due != wake[e]:
            wake[e] = due
            push(heap, (due, e))
        if k % every == 0:
            depth.append((t, in_system))
    while heap:  # the rest, engine by engine in time order
        w, e = pop(heap)
        if wake[e] == w:
            run(e, w)
    if in_system:
        raise AssertionError(f"simulator: {in_system} requests never finished")
    names = [f"{p.name}#{i}" for i, p in enumerate(profiles)]
    res = SimResult(requests, engine, first, final, names, prices, policy, depth)
    res.prompt_tokens = sum(getattr(m, "prompt_tokens", 0) for m in models)
    res.cached_tokens = sum(getattr(m, "cached_tokens", 0) for m in models)
    return res
