"""The serving front over the routing core (``--core_type routing``): ``POST /route`` (the
router's decision for prompts, without serving them), ``GET /experts`` (each expert pool with
its backend, health and load), the route each served request took in its response headers,
and the router's figures in ``/metrics``.

- ``POST /route`` ``{"prompts": [...], "max_words": N}`` -> ``{"decisions": [{"expert",
  "source", "confidence", "top": [{"expert", "p"}]}]}``: the gate, then the MLP; below the
  confidence threshold the default expert (``source`` says which decided). ``max_words``
  decides on the prompt's first N words (the routing config's by default).
- ``GET /experts``: per expert its pool's domain (the config's ``domain``, else its name),
  core type, model (``model`` or ``server_model`` in
  the pool's flags, else the core type), cores up out of cores, pending requests, queries
  routed there, and its fallback.
- Every answer of ``/v1/*`` and ``/generate`` carries ``X-LLMLib-Expert`` (the pool that
  answered) and, where the first pool failed before any token and its ``fallback`` took the
  request over, ``X-LLMLib-Fallback`` with the pools in order (``reasoning->reasoning_bf16``).
- ``/metrics`` adds ``llmlib:router_decision_seconds`` (kind ``route``: ``/route``'s;
  ``served``: each served request's), ``llmlib:routed_requests_total{expert}``,
  ``llmlib:router_fallbacks_total{from_expert, to_expert}`` and
  ``llmlib:expert_pending_requests{expert}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field

from harness.serve.schemas import _Strict

if TYPE_CHECKING:
    from cores.routing import RoutingCore
    from harness.serve.front import ServingFront

DECISION_BUCKETS = (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 0.02)


class RouteRequest(_Strict):
    prompts: list[str] = Field(min_length=1, description="texts to decide on")
    max_words: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None, description="decide on the first N words (default: the routing config's)"
    )


class Choice(_Strict):
    expert: str
    p: float


class RouteDecision(_Strict):
    expert: str
    source: str = Field(description="gate, mlp, default (below the threshold), empty or error")
    confidence: float
    top: list[Choice]


class RouteResponse(_Strict):
    decisions: list[RouteDecision]


def routing_core(front: ServingFront) -> RoutingCore | None:
    from cores.routing import RoutingCore

    return front.core if isinstance(front.core, RoutingCore) else None


class RouterCollector(Collector):
    """The routing core's counts, read at scrape time (they live in the core)."""

    def __init__(self, core: RoutingCore, model: str) -> None:
        self.core, self.model = core, model

    def collect(self) -> Iterator[Any]:
        core = self.core
        routed = CounterMetricFamily(
            "llmlib:routed_requests", "queries routed, by expert", labels=["model_name", "expert"]
        )
        for name, n in zip(core.router.experts, core._per_expert.tolist(), strict=True):
            routed.add_metric([self.model, name], n)
        yield routed
        fb = CounterMetricFamily(
            "llmlib:router_fallbacks",
            "requests a pool failed that its fallback took over",
            labels=["model_name", "from_expert", "to_expert"],
        )
        for pair, n in core.stats["fallbacks"].items():
            a, _, b = pair.partition("->")
            fb.add_metric([self.model, a, b], n)
        yield fb
        pending = GaugeMetricFamily(
            "llmlib:expert_pending_requests",
            "requests in each pool",
            labels=["model_name", "expert"],
        )
        for name, pool in core.pools.items():
            pending.add_metric([self.model, name], pool.pending)
        yield pending


class Routes:
    """What the front keeps for routing: the decision histogram and each request's route."""

    def __init__(self, front: ServingFront) -> None:
        self.front = front
        self.core = routing_core(front)
        decisions = Histogram(
            "llmlib:router_decision_seconds",
            "one decision: on /route, or a served request's (its share of its batch's call)",
            ["model_name", "kind"],
            buckets=DECISION_BUCKETS,
            registry=front.metrics.registry,
        )
        self.decision = decisions.labels(front.model, "route")
        self.served = decisions.labels(front.model, "served")
        self.taken: dict[int, list[str]] = {}  # request id -> experts in order (fallbacks)
        if self.core is not None:
            front.metrics.registry.register(RouterCollector(self.core, front.model))
            self.core.route_hook = self._hook
            self.core.decision_hook = self._timed

    def _timed(self, seconds: float, n: int) -> None:  # served requests' decisions
        for _ in range(n):
            self.served.observe(seconds / n)

    def _hook(self, request_id: int, expert: str) -> None:  # from the core's threads
        self.taken.setdefault(request_id, []).append(expert)

    def headers(self, request_ids: list[int]) -> dict[str, str]:
        """The headers for requests answered together (the first one's route and every
        fallback among them); forgets their routes."""
        if self.core is None:
            return {}
        paths = [self.taken.pop(r, []) for r in request_ids]
        if not paths or not paths[0]:
            return {}
        out = {"X-LLMLib-Expert": ",".join(p[-1] for p in paths if p)}
        falls = ["->".join(p) for p in paths if len(p) > 1]
        if falls:
            out["X-LLMLib-Fallback"] = ",".join(falls)
        return out


def _not_routing(front: ServingFront) -> Any:
    from aiohttp import web

    msg = (
        f"core type {front.cfg.core_type} has no router: start the front with "
        "--core_type routing (and --routing_config)"
    )
    return web.json_response({"error": {"message": msg, "code": 501}}, status=501)


async def route(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    from harness.serve.batch import ApiError, _batch, _body, _error

    core = front.routes.core
    if core is None:
        return _not_routing(front)
    try:
        body: RouteRequest = await _body(request, RouteRequest)
        _batch(front, len(body.prompts))
    except ApiError as exc:
        return _error(front, exc)
    words = body.max_words or core.rc.max_words
    out = []
    clock = time.perf_counter
    for text in body.prompts:
        t0 = clock()
        d = core.router.decide(text, None, words)
        front.routes.decision.observe(clock() - t0)
        top = [Choice(expert=e, p=float(p)) for e, p in d.top]
        out.append(
            RouteDecision(expert=d.expert, source=d.source, confidence=float(d.confidence), top=top)
        )
    resp = RouteResponse(decisions=out)
    return web.Response(body=resp.model_dump_json(), content_type="application/json")


async def experts(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    core = front.routes.core
    if core is None:
        return _not_routing(front)
    routed = dict(zip(core.router.experts, core._per_expert.tolist(), strict=True))
    out = []
    for name, pool in core.pools.items():
        spec = core.rc.pools[name]
        model = spec.flags.get("model") or spec.flags.get("server_model") or spec.core_type
        up = sum(1 for c in pool.cores if c.alive)
        out.append(
            {
                "expert": name,
                "domain": spec.domain or name,
                "core_type": spec.core_type,
                "model": str(model),
                "cores": len(pool.cores),
                "cores_up": up,
                "healthy": up > 0,
                "pending": pool.pending,
                "routed": routed.get(name, 0),
                "fallback": spec.fallback,
            }
        )
    return web.json_response({"default_expert": core.rc.default_expert, "experts": out})
