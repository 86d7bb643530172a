"""The request path's cost per query, in process, without a LoadGen test.

``make bench BENCH_ARGS=path``: the harness's own path (RequestBuilder, RequestLog, LLMServer,
one dummy core with the ``zero`` profile, HarnessSUT.complete, packing) with real LoadGen
``QuerySample`` objects in and ``QuerySampleResponse`` objects out (LoadGen's completion calls
are not made: no test runs). Two figures per scenario:

* Python opcodes per query, counted with ``sys.settrace``: deterministic, so a change of a
  few percent shows even on a noisy machine;
* microseconds per query (process time, the best of several rounds).

Offline: one issue of many queries; Server: one query per call.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter
from collections.abc import Iterable
from itertools import starmap
from typing import Any

import numpy as np

from harness.run.prepare import build_cores, build_dataset
from harness.run.sut import HarnessSUT
from llmlib.config.settings import resolve
from llmlib.data.benchmarks import load_benchmark
from llmlib.serving.policies import make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request_log import RequestLog


class _ResponseSink:
    """Builds LoadGen's response objects as LoadGenSink does, without a test to give them to."""

    def __init__(self) -> None:
        import mlperf_loadgen as lg

        self._resp = lg.QuerySampleResponse
        self.finals = 0

    def first_token_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None:
        list(starmap(self._resp, items))

    def query_samples_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None:
        self.finals += len(list(starmap(self._resp, items)))


def _setup(scenario: str) -> tuple[HarnessSUT, int]:
    cfg = resolve(
        {},
        benchmark="tiny",
        scenario=scenario,
        env={},
        explicit={"engine_profile": "zero", "num_cores": 1},
    )
    ds = build_dataset(cfg, load_benchmark(cfg.config_dir, cfg.benchmark))
    server = LLMServer(build_cores(cfg), make_policy("round_robin", 1, 0))
    sut = HarnessSUT(server, ds, _ResponseSink(), scenario != "offline", RequestLog(), np.uint32)
    return sut, len(ds)


def _queries(n: int, samples: int) -> list[Any]:
    import mlperf_loadgen as lg

    out = []
    for i in range(n):
        q = lg.QuerySample()
        q.id, q.index = i + 1, i % samples
        out.append(q)
    return out


def _drive(sut: HarnessSUT, scenario: str, qs: list[Any]) -> None:
    if scenario == "offline":
        sut.issue_queries(qs)
    else:
        issue = sut.issue_queries
        for q in qs:
            issue([q])


def opcodes_per_query(scenario: str, n: int = 2048) -> tuple[float, dict[str, float]]:
    """Opcodes per query over ``n`` queries, after every sample has been seen once."""
    sut, samples = _setup(scenario)
    warm = _queries(samples, samples)
    _drive(sut, scenario, warm)
    qs = _queries(n, samples)
    counts: Counter[str] = Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        _drive(sut, scenario, qs)
    finally:
        sys.settrace(None)
    return sum(counts.values()) / n, {k: v / n for k, v in counts.most_common(8)}


def us_per_query(scenario: str, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        sut, samples = _setup(scenario)
        _drive(sut, scenario, _queries(samples, samples))
        qs = _queries(n, samples)
        gc.collect()
        gc.disable()
        try:
            t = time.process_time()
            _drive(sut, scenario, qs)
            best = min(best, time.process_time() - t)
        finally:
            gc.enable()
        sink = sut.sink
        if not isinstance(sink, _ResponseSink) or sink.finals != n + samples:
            raise RuntimeError("path cost: not every query was completed")
    return best / n * 1e6


def path_cost() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scen, n in (("offline", 200_000), ("server", 50_000)):
        ops, top = opcodes_per_query(scen)
        out[scen] = {"opcodes_per_query": ops, "top": top, "us_per_query": us_per_query(scen, n)}
    return out
