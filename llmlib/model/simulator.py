"""A serving fleet in virtual time: engines from the dummy core's engine model, requests from
a seeded arrival process, and a traffic policy from ``llmlib.serving.policies`` (the same code the
live ``LLMServer`` runs) choosing an engine for each arrival.

Time never waits on a clock: the loop keeps a heap of each engine's next step boundary,
advances only the engines due before the next arrival, hands that arrival to the policy
(with each engine's pending count, as ``LLMServer`` does), and submits it. Engines advance
pure-decode stretches as one span (``engine_model``), so the cost is per event, not per
token. Same inputs and seed, same output, to the nanosecond.

Results (``SimResult.summary``): TTFT and TPOT percentiles, goodput (requests per second
meeting the TTFT and TPOT limits) and goodput per dollar (from each engine's price per
hour), queue depth over time, each engine's requests (and the busiest over the mean, per
pool), the prefix cache's hit rate, and what the policy did (migrations: requests sent away
from the one engine holding most of their prefix, for the policies that track it).

Shared mode runs every request on one engine. Disaggregated mode (``decode_engines``) has a
prefill pool and a decode pool: the request prefills in the first (first token), its KV
cache moves over a per-engine link (``KVTransfer``), and it decodes in the second; each
pool has its own policy. Policies that read telemetry see each engine's TTFT and TPOT
moving averages, updated as the simulated answers come (``llmlib.serving.core.Telemetry``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.model.engine import BLOCK_TOKENS, EngineProfile, make_model
from llmlib.serving.core import Telemetry
from llmlib.serving.policies import make_policy
from llmlib.serving.prefix import chat_blocks


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival_ns: int
    prompt_len: int
    output_len: int
    blocks: tuple[int, ...] = ()  # chained hashes of its prompt's blocks (llmlib.serving.prefix)


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
    decode_engine: np.ndarray | None = None  # disaggregated: where each decoded (-1: none)
    pools: dict[str, int] = field(default_factory=dict)  # pool -> engines, in engine order
    policy_stats: dict[str, Any] = field(default_factory=dict)
    decode_policy: str = ""
    decode_policy_stats: dict[str, Any] = field(default_factory=dict)

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
        if self.decode_engine is not None:
            dec = self.decode_engine[self.decode_engine >= 0]
            counts = counts + np.bincount(dec, minlength=len(self.engine_names))
        pools = self.pools or {"shared": len(self.engine_names)}
        busiest: dict[str, float] = {}
        at = 0
        for pool, size in pools.items():
            c = counts[at : at + size]
            busiest[pool] = float(c.max() / c.mean()) if c.sum() else 0.0
            at += size

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
            "pools": pools,
            "per_engine": {
                "names": self.engine_names,
                "requests": counts.tolist(),
                "busiest_over_mean": max(busiest.values()),
                "busiest_over_mean_by_pool": busiest,
            },
            "migrations": _migrations(self.policy_stats, self.decode_policy_stats),
            "policy_stats": self.policy_stats,
            **(
                {
                    "decode_policy": self.decode_policy,
                    "decode_policy_stats": self.decode_policy_stats,
                }
                if self.decode_policy
                else {}
            ),
            "queue_depth": {
                "max": max((d for _, d in self.depth), default=0),
                "over_time": [[t / 1e9, d] for t, d in self.depth],
            },
        }


@dataclass(frozen=True)
class KVTransfer:
    """Moving a prompt's KV cache from a prefill engine to a decode engine: each prefill
    engine sends one at a time (its link busy ``per_token_ns`` per prompt token), and the
    cache lands ``base_ns`` after its last byte leaves (set-up and latency)."""

    base_ns: int = 0
    per_token_ns: int = 0

    def __post_init__(self) -> None:
        if self.base_ns < 0 or self.per_token_ns < 0:
            raise ConfigError("KV transfer: base and per-token times must not be negative")

    @classmethod
    def from_flags(cls, flags: Mapping[str, float]) -> KVTransfer:
        """From a parsed ``base_us:..,per_token_ns:..`` flag string (``KV_TRANSFER_FLAGS``)."""
        return cls(
            int(round(flags.get("base_us", 0.0) * 1000)), int(round(flags.get("per_token_ns", 0.0)))
        )

    def landed_ns(self, done_ns: int, link_free_ns: int, prompt_len: int) -> tuple[int, int]:
        """(when the link is free again, when the KV cache has landed) for a prompt
        prefilled at ``done_ns`` on an engine whose link frees at ``link_free_ns``."""
        free = max(done_ns, link_free_ns) + self.per_token_ns * prompt_len
        return free, free + self.base_ns


def _migrations(*stats: dict[str, Any]) -> int | None:
    """Requests the policies sent away from their prefix's home (None: no policy counts)."""
    got = [s["migrations"] for s in stats if "migrations" in s]
    return sum(got) if got else None


def simulate(
    requests: Sequence[SimRequest],
    engines: Sequence[EngineSpec],
    policy: str = "least_pending",
    seed: int = 0,
    depth_points: int = 200,
    placement: Sequence[int] | None = None,
    policy_flags: Mapping[str, Any] | None = None,
    decode_engines: Sequence[EngineSpec] = (),
    decode_policy: str = "least_pending",
    decode_policy_flags: Mapping[str, Any] | None = None,
    kv_transfer: KVTransfer | None = None,
) -> SimResult:
    """Run ``requests`` through the engines, each arrival placed by ``policy``, or on the
    engine ``placement`` gives it (a recorded run's own choices).

    With ``decode_engines`` the fleet is disaggregated: ``engines`` is the prefill pool
    (each request prefills there and yields its first token), then its KV cache moves
    (``kv_transfer``) to a decode engine chosen by ``decode_policy`` when it lands, which
    decodes the rest. A one-token answer ends at prefill."""
    profiles, prices = _fleet(engines)
    n_pre = len(profiles)
    if decode_engines:
        more, more_prices = _fleet(decode_engines)
        profiles += more
        prices += more_prices
    n_eng, n = len(profiles), len(requests)
    disagg = n_eng > n_pre
    transfer = kv_transfer or KVTransfer()
    models = [make_model(p) for p in profiles]
    tels = [Telemetry() for _ in range(n_eng)]
    chooser = make_policy(policy, n_pre, seed, policy_flags)
    chooser.bind(tels[:n_pre])
    dchooser = None
    if disagg:
        dchooser = make_policy(decode_policy, n_eng - n_pre, seed, decode_policy_flags)
        dchooser.bind(tels[n_pre:])
    watch = chooser.uses_telemetry or (dchooser is not None and dchooser.uses_telemetry)
    if placement is not None and (
        len(placement) != n or any(not 0 <= e < n_pre for e in placement)
    ):
        raise ConfigError(f"placement: {n} engine indices below {n_pre} expected")
    pending = [0] * n_eng
    engine = np.zeros(n, dtype=np.int64)
    decode_engine = np.full(n, -1, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    final = np.zeros(n, dtype=np.int64)
    link_free = [0] * n_pre
    wake: list[int | None] = [None] * n_eng
    heap: list[tuple[int, int]] = []  # (next step boundary, engine); stale entries skipped
    handoffs: list[tuple[int, int]] = []  # (KV landed at a decode engine, request)
    push, pop = heapq.heappush, heapq.heappop
    in_system = 0
    every = max(1, n // max(depth_points, 1))
    depth: list[tuple[int, int]] = []

    def run(e: int, until: int) -> None:
        nonlocal in_system
        for t, sid, is_final in models[e].advance(until):
            if not is_final:
                first[sid] = t
                if watch:
                    tels[e].observe_ttft(t - requests[sid].arrival_ns)
                continue
            pending[e] -= 1
            out = requests[sid].output_len
            if disagg and e < n_pre and out > 1:  # prefilled: its KV cache moves on
                link_free[e], landed = transfer.landed_ns(t, link_free[e], requests[sid].prompt_len)
                push(handoffs, (landed, sid))
                continue
            final[sid] = t
            in_system -= 1
            if watch and out > 1:
                tels[e].observe_tpot((t - first[sid]) / (out - 1))
        schedule(e)

    def schedule(e: int) -> None:
        w = models[e].next_wakeup_ns()
        if w is not None and w != wake[e]:
            push(heap, (w, e))
        wake[e] = w

    def until(t: float) -> None:
        """Every engine step and KV landing up to ``t``, in time order."""
        while True:
            tw = heap[0][0] if heap else math.inf
            th = handoffs[0][0] if handoffs else math.inf
            if min(tw, th) > t or not (heap or handoffs):
                return
            if tw <= th:
                w, e = pop(heap)
                if wake[e] == w:
                    wake[e] = None
                    run(e, w)
                continue
            h, sid = pop(handoffs)
            loads = pending[n_pre:]
            d = n_pre + dchooser.assign([requests[sid]], loads)[0]  # type: ignore[union-attr,list-item]
            decode_engine[sid] = d
            models[d].submit_decode(sid, h, requests[sid].output_len - 1)
            pending[d] += 1
            schedule(d)

    for k, req in enumerate(requests):
        t = req.arrival_ns
        until(t)
        e = chooser.assign([req], pending[:n_pre])[0] if placement is None else placement[k]  # type: ignore[list-item]
        engine[k] = e
        models[e].submit(k, t, req.prompt_len, 1 if disagg else req.output_len, req.blocks)
        pending[e] += 1
        in_system += 1
        schedule(e)
        if k % every == 0:
            depth.append((t, in_system))
    until(math.inf)
    if in_system:
        raise AssertionError(f"simulator: {in_system} requests never finished")
    names = [f"{p.name}#{i}" for i, p in enumerate(profiles)]
    res = SimResult(requests, engine, first, final, names, prices, policy, depth)
    res.decode_engine = decode_engine
    res.pools = {"prefill": n_pre, "decode": n_eng - n_pre} if disagg else {"shared": n_eng}
    res.policy_stats = chooser.stats()
    if dchooser is not None:
        res.decode_policy = decode_policy
        res.decode_policy_stats = dchooser.stats()
    res.prompt_tokens = sum(getattr(m, "prompt_tokens", 0) for m in models)
    res.cached_tokens = sum(getattr(m, "cached_tokens", 0) for m in models)
    return res


def _fleet(engines: Sequence[EngineSpec]) -> tuple[list[EngineProfile], list[float]]:
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
    return profiles, prices
