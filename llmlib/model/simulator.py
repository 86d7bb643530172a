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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest
from llmlib.model.engine import EngineProfile, make_model
from llmlib.serving.core import Telemetry
from llmlib.serving.kv_transfer import KVTransfer
from llmlib.serving.policies import TrafficPolicy, make_policy


@dataclass(frozen=True)
class EngineSpec:
    """``count`` engines of ``profile``, each costing ``price_per_hour`` (any currency)."""

    profile: EngineProfile
    count: int = 1
    price_per_hour: float = 0.0


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
            "e2e_ms": pct((self.final_ns - arr) / 1e6),
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
    n = len(requests)
    if placement is not None and (
        len(placement) != n or any(not 0 <= e < n_pre for e in placement)
    ):
        raise ConfigError(f"placement: {n} engine indices below {n_pre} expected")
    chooser = make_policy(policy, n_pre, seed, policy_flags)
    dchooser = None
    if len(profiles) > n_pre:
        dchooser = make_policy(decode_policy, len(profiles) - n_pre, seed, decode_policy_flags)
    run = _FleetRun(requests, profiles, n_pre, chooser, dchooser, kv_transfer or KVTransfer())
    run.run(placement, max(1, n // max(depth_points, 1)))
    names = [f"{p.name}#{i}" for i, p in enumerate(profiles)]
    res = SimResult(requests, run.engine, run.first, run.final, names, prices, policy, run.depth)
    res.decode_engine = run.decode_engine
    res.pools = (
        {"prefill": n_pre, "decode": run.n_eng - n_pre} if run.disagg else {"shared": run.n_eng}
    )
    res.policy_stats = chooser.stats()
    if dchooser is not None:
        res.decode_policy = decode_policy
        res.decode_policy_stats = dchooser.stats()
    res.prompt_tokens = sum(getattr(m, "prompt_tokens", 0) for m in run.models)
    res.cached_tokens = sum(getattr(m, "cached_tokens", 0) for m in run.models)
    return res


class _FleetRun:
    """One simulation's state and its event loop: engine steps (a heap of each engine's next
    step boundary; stale entries skipped) and KV landings at decode engines (a second heap),
    taken in time order between arrivals."""

    def __init__(
        self,
        requests: Sequence[SimRequest],
        profiles: list[EngineProfile],
        n_pre: int,
        chooser: TrafficPolicy,
        dchooser: TrafficPolicy | None,
        transfer: KVTransfer,
    ) -> None:
        self.requests, self.n_pre, self.transfer = requests, n_pre, transfer
        self.n_eng = n_eng = len(profiles)
        self.disagg = n_eng > n_pre
        self.models = [make_model(p) for p in profiles]
        self.tels = [Telemetry() for _ in range(n_eng)]
        self.chooser, self.dchooser = chooser, dchooser
        chooser.bind(self.tels[:n_pre])
        if dchooser is not None:
            dchooser.bind(self.tels[n_pre:])
        # the requests each engine holds, by id() (what a policy keys a SimRequest by), for
        # policies that read them; kept only for those
        self.holds: list[set[int]] | None = None
        if chooser.uses_pending_ids or (dchooser is not None and dchooser.uses_pending_ids):
            self.holds = [set() for _ in range(n_eng)]
            chooser.bind_pending(self.holds[:n_pre])
            if dchooser is not None:
                dchooser.bind_pending(self.holds[n_pre:])
        self.watch = chooser.uses_telemetry or (dchooser is not None and dchooser.uses_telemetry)
        n = len(requests)
        self.pending = [0] * n_eng
        self.engine = np.zeros(n, dtype=np.int64)
        self.decode_engine = np.full(n, -1, dtype=np.int64)
        self.first = np.zeros(n, dtype=np.int64)
        self.final = np.zeros(n, dtype=np.int64)
        self.link_free = [0] * n_pre
        self.wake: list[int | None] = [None] * n_eng
        self.heap: list[tuple[int, int]] = []  # (next step boundary, engine)
        self.handoffs: list[tuple[int, int]] = []  # (KV landed at a decode engine, request)
        self.in_system = 0
        self.depth: list[tuple[int, int]] = []

    def run(self, placement: Sequence[int] | None, every: int) -> None:
        """Every arrival in order (placed by the policy or ``placement``), then the rest."""
        for k, req in enumerate(self.requests):
            t = req.arrival_ns
            self.until(t)
            if placement is None:
                e = self.chooser.assign([req], self.pending[: self.n_pre])[0]  # type: ignore[list-item]
            else:
                e = placement[k]
            self.engine[k] = e
            out = 1 if self.disagg else req.output_len
            self.models[e].submit(k, t, req.prompt_len, out, req.blocks)
            self.pending[e] += 1
            if self.holds is not None:
                self.holds[e].add(id(req))
            self.in_system += 1
            self.schedule(e)
            if k % every == 0:
                self.depth.append((t, self.in_system))
        self.until(math.inf)
        if self.in_system:
            raise AssertionError(f"simulator: {self.in_system} requests never finished")

    def step(self, e: int, until: int) -> None:
        """Engine ``e`` up to ``until``: first tokens, finals, prefilled caches sent on."""
        requests, first = self.requests, self.first
        for t, sid, is_final in self.models[e].advance(until):
            if not is_final:
                first[sid] = t
                if self.watch:
                    self.tels[e].observe_ttft(t - requests[sid].arrival_ns)
                continue
            self.pending[e] -= 1
            if self.holds is not None:
                self.holds[e].discard(id(requests[sid]))
            out = requests[sid].output_len
            if self.disagg and e < self.n_pre and out > 1:  # prefilled: its KV cache moves on
                self.link_free[e], landed = self.transfer.landed_ns(
                    t, self.link_free[e], requests[sid].prompt_len
                )
                heapq.heappush(self.handoffs, (landed, sid))
                continue
            self.final[sid] = t
            self.in_system -= 1
            if self.watch and out > 1:
                self.tels[e].observe_tpot((t - first[sid]) / (out - 1))
        self.schedule(e)

    def schedule(self, e: int) -> None:
        w = self.models[e].next_wakeup_ns()
        if w is not None and w != self.wake[e]:
            heapq.heappush(self.heap, (w, e))
        self.wake[e] = w

    def until(self, t: float) -> None:
        """Every engine step and KV landing up to ``t``, in time order."""
        heap, handoffs, wake = self.heap, self.handoffs, self.wake
        while heap or handoffs:
            tw = heap[0][0] if heap else math.inf
            th = handoffs[0][0] if handoffs else math.inf
            if min(tw, th) > t:
                return
            if tw <= th:
                w, e = heapq.heappop(heap)
                if wake[e] == w:
                    wake[e] = None
                    self.step(e, w)
                continue
            self.land(*heapq.heappop(handoffs))

    def land(self, at: int, sid: int) -> None:
        """A prefilled request's KV cache lands: its decode engine is chosen now."""
        assert self.dchooser is not None
        n_pre = self.n_pre
        d = n_pre + self.dchooser.assign([self.requests[sid]], self.pending[n_pre:])[0]  # type: ignore[list-item]
        self.decode_engine[sid] = d
        self.models[d].submit_decode(sid, at, self.requests[sid].output_len - 1)
        self.pending[d] += 1
        if self.holds is not None:
            self.holds[d].add(id(self.requests[sid]))
        self.schedule(d)


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
