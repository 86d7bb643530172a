"""The routing core: a router in front of expert pools (``--core_type=routing``).

Each query is decided on before it is enqueued (``llmlib.router.model``: the keyword gate, then
the quantized MLP; low confidence goes to the default expert; near-equal experts go to the
less loaded pool) and handed to that expert's pool, an ``LLMServer`` over cores of any
registered type (``--routing_config``, ``configs/routing/*.yaml``). A query a pool fails is
given to the pool's declared ``fallback``, and on to that pool's fallback if it fails there
too (a chain: an FP8 endpoint first, BF16 on failure, then a general pool; no pool twice),
unless its first token already reached LoadGen (a second answer would break the
first-token/final contract); such failures, and those with no fallback left, complete as
failed. A pool that only serves as a fallback needs no expert of its own.

The router reads text: prompts are decoded with ``--tokenizer_path`` once per sample
(LoadGen draws the same samples again and again; the decision itself is made per query).
Statistics (queries per expert, imbalance, gate hit rate, confidence, margin and entropy
distributions, fallbacks) go to the report's notes and to ``routing.json`` in the run
directory.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llmlib.config.fields import REPO_ROOT, Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError, HealthCheckError
from llmlib.router.config import RoutingConfig, load_routing_config
from llmlib.router.features import MAX_CHARS
from llmlib.router.model import SOURCES
from llmlib.serving.core import CoreCapabilities, LLMCore
from llmlib.serving.health import describe_events
from llmlib.serving.policies import BREAKER_TUNABLES, make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.registry import get_core_class, register_core
from llmlib.serving.request import LLMRequest, LLMResponse, RequestBatch, ResponseBatch


@dataclass(frozen=True)
class RoutingSettings(Section):
    group: ClassVar[str] = "routing"
    routing_config: str = setting(
        str(REPO_ROOT / "configs" / "routing" / "default.yaml"),
        "the routing core's YAML: router artifact, gate rules, expert pools, fallbacks",
        path=True,
    )
    routing_stats_file: str = setting(
        "routing.json",
        "where the routing core writes its decisions' statistics (relative: in the run "
        "directory; '' for none)",
    )


class _Loads:
    """Pending queries per expert pool, read only when the tie-break asks."""

    def __init__(self, pools: dict[str, LLMServer]) -> None:
        self._pools = pools

    def get(self, name: str, default: int = 0) -> int:
        pool = self._pools.get(name)
        return default if pool is None else pool.pending

    def __bool__(self) -> bool:
        return True


@register_core("routing")
class RoutingCore(LLMCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True, batches=True)

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        return 1  # one router; the pools hold the engines

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        if not cfg.tokenizer_path:
            raise ConfigError(
                "the routing core reads prompts as text: give --tokenizer_path "
                "(make tiny-model builds one into build/tiny-model)"
            )
        rc = load_routing_config(RoutingSettings.of(cfg).routing_config)
        rc.router()  # the artifact loads and every expert has a pool
        for pool in rc.pools.values():
            sub = cls._pool_config(cfg, pool)
            get_core_class(pool.core_type).validate_config(sub)

    @staticmethod
    def _pool_config(cfg: Config, pool: Any) -> Any:
        changes: dict[str, Any] = dict(pool.flags, core_type=pool.core_type)
        if pool.num_cores:
            changes["num_cores"] = pool.num_cores
        return cfg.replace(**changes)

    def __init__(self, core_id: int, cfg: Config, callback: Any = None) -> None:
        super().__init__(core_id, cfg, callback)
        from llmlib.data.tokenizer import load_tokenizer

        self.rc: RoutingConfig = load_routing_config(RoutingSettings.of(cfg).routing_config)
        self.router = self.rc.router()
        self._tok = load_tokenizer(cfg.tokenizer_path) if cfg.tokenizer_path else None
        self.pools: dict[str, LLMServer] = {}
        next_id = 0
        for name, spec in self.rc.pools.items():
            sub = self._pool_config(cfg, spec)
            kind = get_core_class(spec.core_type)
            n = kind.num_cores_for_workload(sub)
            cores = [kind(next_id + i, kind.config_for_core(i, sub)) for i in range(n)]
            next_id += n
            breaker = {k: v for k, v in cfg.policy_flags.items() if k in BREAKER_TUNABLES}
            pool = LLMServer(cores, make_policy("least_pending", n, cfg.policy_seed, breaker))
            pool.set_callback(self._on_expert)
            self.pools[name] = pool
        self._loads = _Loads(self.pools) if self.rc.tie_margin > 0 else None
        self._texts: dict[int, tuple[Any, str | None]] = {}
        # request id -> (pool it is in, the pools that failed it before, the request or the
        # batch it came in, its sample index): what a fallback needs to issue it again
        self._routes: dict[int, tuple[str, tuple[str, ...], LLMRequest | RequestBatch, int]] = {}
        self._first_sent: set[int] = set()
        self._lock = threading.Lock()  # the books of responses from several pools' threads
        self._closing = False
        # told (request id, expert) as each request is routed and again on a fallback: the
        # serving front's response headers; None in a harness run (nothing to pay)
        self.route_hook: Callable[[int, str], None] | None = None
        # told (seconds, queries) for each call's decisions, likewise for the front's metrics
        self.decision_hook: Callable[[float, int], None] | None = None
        self.stats: dict[str, Any] = {"fallbacks": Counter(), "failed_no_fallback": 0}
        k = len(self.router.experts)
        self._per_expert = np.zeros(k, dtype=np.int64)
        self._per_source = np.zeros(len(SOURCES), dtype=np.int64)
        self._dists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # --- text -----------------------------------------------------------------------------
    def _text(self, index: int, tokens: Any) -> str | None:
        """The head of sample ``index``'s prompt as text: what the router reads (its first
        ``MAX_CHARS`` characters), decoded once per sample (``tokens`` is the cache's
        guard); None when it cannot be decoded (the default expert then).

        Only the first ``MAX_CHARS`` + 64 tokens are decoded when they give the router all
        it reads (a token is at least one character, special ones aside; a margin covers a
        character cut at the end), so a long prompt is routed on its first words without
        decoding the rest; where they do not, the whole prompt is."""
        hit = self._texts.get(index)
        if hit is not None and hit[0] is tokens:
            return hit[1]
        if self._tok is None:
            raise ConfigError("the routing core needs --tokenizer_path")
        try:
            head = MAX_CHARS + 64  # tokens: the special ones at the start decode to nothing
            text: str | None = self._tok.decode([int(t) for t in tokens[:head]])
            if len(tokens) > head and len(text or "") < MAX_CHARS + 8:
                text = self._tok.decode([int(t) for t in tokens])  # short tokens: all of it
        except Exception:
            text = None
        self._texts[index] = (tokens, text)
        return text

    # --- requests in ----------------------------------------------------------------------
    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        """Decide every request in one call (columns), book each route before any answer
        can come, then issue each expert's share to its pool: a batch as sub-batches."""
        text = self._text
        if type(requests) is RequestBatch:
            inputs = requests.source.inputs
            indices = requests.sample_indices
            texts = [text(i, inputs[i]) for i in indices]
        else:
            indices = [r.sample_index for r in requests]
            texts = [text(r.sample_index, r.input_tokens) for r in requests]
        timed = self.decision_hook
        t0 = time.perf_counter() if timed is not None else 0.0
        d = self.router.decide_columns(texts, self._loads, self.rc.max_words)  # type: ignore[arg-type]
        if timed is not None:
            timed(time.perf_counter() - t0, len(texts))
        names = self.router.experts
        if not self._warmup:
            self._per_expert += np.bincount(d.experts, minlength=len(names))
            self._per_source += np.bincount(d.sources, minlength=len(SOURCES))
            mlp = d.sources <= 1
            self._dists.append((d.confidence[mlp], d.margin[mlp], d.entropy[mlp]))
        chosen = d.experts.tolist()
        hook = self.route_hook
        if hook is not None:
            batch = type(requests) is RequestBatch
            ids = requests.request_ids if batch else [r.request_id for r in requests]  # type: ignore[attr-defined]
            for rid, e in zip(ids, chosen, strict=True):
                hook(rid, names[e])
        routes = self._routes
        positions: dict[int, list[int]] = {}
        if type(requests) is RequestBatch:
            for pos, (rid, e) in enumerate(zip(requests.request_ids, chosen, strict=True)):
                routes[rid] = (names[e], (), requests, indices[pos])
                positions.setdefault(e, []).append(pos)
            for e, pos_list in positions.items():
                self.pools[names[e]].issue(requests.subset(pos_list))
            return
        groups: dict[int, list[LLMRequest]] = {}
        for req, e in zip(requests, chosen, strict=True):
            routes[req.request_id] = (names[e], (), req, req.sample_index)
            groups.setdefault(e, []).append(req)
        for e, reqs in groups.items():
            self.pools[names[e]].issue(reqs)

    # --- responses back -------------------------------------------------------------------
    def _on_expert(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        if type(responses) is ResponseBatch:  # finals, all answered: forwarded as columns
            with self._lock:
                pop, first = self._routes.pop, self._first_sent
                for rid in responses.request_ids:
                    pop(rid, None)
                    if first:
                        first.discard(rid)
            self._deliver_batch(responses)
            return
        forward: list[LLMResponse] = []
        retry: dict[str, list[LLMRequest]] = {}
        with self._lock:
            for r in responses:  # type: ignore[union-attr]
                rid = r.request_id
                route = self._routes.get(rid)
                if route is None:
                    continue
                if not r.is_final:
                    self._first_sent.add(rid)
                    forward.append(r)
                    continue
                pool, failed_in, came, index = route
                fallback = self.rc.pools[pool].fallback
                if (
                    r.error is not None
                    and fallback
                    and fallback not in failed_in
                    and not self._closing
                    and rid not in self._first_sent
                ):
                    self._routes[rid] = (fallback, (*failed_in, pool), came, index)
                    self.stats["fallbacks"][f"{pool}->{fallback}"] += 1
                    if self.route_hook is not None:
                        self.route_hook(rid, fallback)
                    req = (
                        came
                        if type(came) is not RequestBatch
                        else came.source.one(rid, index, came.issue_ns)
                    )
                    retry.setdefault(fallback, []).append(req)  # type: ignore[arg-type]
                    continue
                if r.error is not None:
                    self.stats["failed_no_fallback"] += 1
                del self._routes[rid]
                self._first_sent.discard(rid)
                forward.append(r)
        if forward:
            self._deliver(forward)
        for name, reqs in retry.items():
            self.pools[name].issue(reqs)

    # --- lifecycle ------------------------------------------------------------------------
    def _health_check_impl(self) -> None:
        for name, pool in self.pools.items():
            for c in pool.cores:
                try:
                    c.run_health_check()
                except HealthCheckError as exc:
                    raise HealthCheckError(f"pool {name}: {exc}") from None

    def _close_impl(self) -> None:
        self._closing = True  # what the pools fail now is not retried elsewhere
        for pool in self.pools.values():
            pool.close()
        self._write_stats()

    # --- report ---------------------------------------------------------------------------
    def routing_stats(self) -> dict[str, Any]:
        st = self.stats
        per = dict(zip(self.router.experts, self._per_expert.tolist(), strict=True))
        counts = [per.get(name, 0) for name in self.pools]
        total = sum(counts)
        mean = total / len(counts) if counts else 0.0
        cv = float(np.std(counts) / mean) if mean else 0.0
        sources = {s: c for s, c in zip(SOURCES, self._per_source.tolist(), strict=True) if c}

        def dist(col: int) -> dict[str, float]:
            parts = [d[col] for d in self._dists if len(d[col])]
            if not parts:
                return {}
            a = np.concatenate(parts).astype(np.float64)
            return {f"p{q}": float(np.percentile(a, q)) for q in (1, 10, 50, 90, 99)}

        return {
            "queries": total,
            "per_expert": {name: per.get(name, 0) for name in self.pools},
            "imbalance_cv": cv,
            "sources": sources,
            "gate_hit_rate": sources.get("gate", 0) / total if total else 0.0,
            "default_rate": sources.get("default", 0) / total if total else 0.0,
            "fallbacks": dict(st["fallbacks"]),
            "failed_without_fallback": st["failed_no_fallback"],
            "confidence": dist(0),
            "margin": dist(1),
            "entropy": dist(2),
            "router": str(self.rc.router_path),
            "precision": self.rc.precision,
        }

    def _write_stats(self) -> None:
        name = RoutingSettings.of(self.cfg).routing_stats_file
        if name and self._per_expert.any():
            Path(name).write_text(json.dumps(self.routing_stats(), indent=1) + "\n")

    def report_notes(self) -> list[str]:
        s = self.routing_stats()
        per = ", ".join(f"{k} {v}" for k, v in s["per_expert"].items())
        notes = [
            f"routing: {s['queries']} queries: {per} (imbalance CV {s['imbalance_cv']:.2f}); "
            f"gate {s['gate_hit_rate']:.1%}, low confidence to default {s['default_rate']:.1%}"
        ]
        if s["fallbacks"]:
            fb = ", ".join(f"{k} {v}" for k, v in s["fallbacks"].items())
            notes.append(f"routing fallbacks: {fb}")
        if s["failed_without_fallback"]:
            notes.append(f"routing: {s['failed_without_fallback']} failed with no fallback left")
        if s["margin"]:
            notes.append(
                f"router margin p10/p50 {s['margin']['p10']:.2f}/{s['margin']['p50']:.2f}, "
                f"entropy p50/p90 {s['entropy']['p50']:.2f}/{s['entropy']['p90']:.2f}"
            )
        for name, pool in self.pools.items():
            for c in pool.cores:
                notes += c.report_notes()
            notes += [f"pool {name}: {e}" for e in describe_events(pool.health.summary())]
        return notes
