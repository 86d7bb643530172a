"""The pool's breaker (llmlib.serving.health): a dead core leaves the rotation under every policy, a
failing one rests and is probed, and every move is in the report's events."""

import numpy as np
import pytest

from cores.dummy import DummyCore
from llmlib.serving.core import LLMCore
from llmlib.serving.disagg import PDServer
from llmlib.serving.health import CoreHealth, describe_events
from llmlib.serving.kv_transfer import KVTransfer
from llmlib.serving.policies import POLICIES, make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request import LLMRequest, LLMResponse, failed_response
from tests.conftest import make_cfg


def req(i, stream=False):
    return LLMRequest(i, i % 7, np.arange(1, 40, dtype=np.uint32), 16, stream, 4, None, 0)


class Flaky(LLMCore):
    """Answers at once in the caller's thread; every request fails while ``broken``."""

    name = "flaky"

    def __init__(self, core_id, callback):
        super().__init__(core_id, None, callback)
        self.broken = False

    def _enqueue_impl(self, requests):
        out = []
        for r in requests:
            if self.broken:
                out.append(failed_response(r.request_id, "HTTP 500 from the server", 1, 0))
            else:
                out.append(LLMResponse(r.request_id, np.array([1, 2], np.uint32), True, 1))
        self._deliver(out)


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_dead_core_leaves_the_rotation_at_once_under_every_policy(collector, policy):
    # the dead core holds nothing, so a policy reading pending counts would favour it
    cores = [DummyCore(0, make_cfg(engine_profile="zero", dummy_fail_after=10), collector),
             DummyCore(1, make_cfg(engine_profile="zero"), collector)]  # fmt: skip
    server = LLMServer(cores, make_policy(policy, 2))
    try:
        for i in range(500):
            server.issue([req(i)])
        finals = collector.finals()
        assert len(finals) == 500
        failed = [r for r in finals.values() if not r.ok]
        assert len(failed) <= 10  # the request that killed it and what it held, no more
        assert server.issued[0] <= 20 and server.issued[1] >= 480
        events = server.health.summary()
        assert [(e["core"], e["event"]) for e in events] == [(0, "down")]
        assert "injected failure" in events[0]["reason"]
    finally:
        server.close()


def test_a_failing_core_rests_is_probed_and_comes_back(collector):
    a, b = Flaky(0, collector), Flaky(1, collector)
    server = LLMServer([a, b], make_policy("round_robin", 2, flags={"eject_after": 3}))
    clock = Clock()
    server.health.now_ns = clock
    a.broken = True
    for i in range(20):
        server.issue([req(i)])
    # round robin: a's 3rd failure in a row ejects it; b takes the rest
    assert server.issued == [3, 17]
    assert server.health.state == ["ejected", "up"]
    clock.t = int(9.9e9)
    server.issue([req(20)])
    assert server.issued == [3, 18]  # still resting
    clock.t = int(10e9)
    server.issue([req(21), req(22), req(23)])  # rest over: a gets one probe, no more
    assert server.issued == [4, 20]
    assert server.health.state == ["ejected", "up"]  # the probe failed: rests 20 s now
    clock.t = int(29e9)
    server.issue([req(24)])
    assert server.issued == [4, 21]
    a.broken = False
    clock.t = int(30e9)
    for i in range(25, 29):  # the probe is answered; the next issue sees it
        server.issue([req(i)])
    assert server.health.state == ["up", "up"]
    before = server.issued[0]
    for i in range(29, 33):
        server.issue([req(i)])
    assert server.issued[0] - before == 2  # back in turn
    lines = describe_events(server.health.summary(0))
    assert lines == [
        "0.000 s: core 0 ejected: 3 failures in a row; the last: HTTP 500 from the server "
        "(rests 10 s)",
        "10.000 s: core 0 probing: rest over: one probe request",
        "10.000 s: core 0 ejected: probe failed: HTTP 500 from the server (rests 20 s)",
        "30.000 s: core 0 probing: rest over: one probe request",
        "30.000 s: core 0 up: probe succeeded",
    ]
    assert len(collector.finals()) == 33


def test_no_usable_core_leaves_the_choice_alone(collector):
    a, b = Flaky(0, collector), Flaky(1, collector)
    server = LLMServer([a, b], make_policy("least_pending", 2, flags={"eject_after": 1}))
    a.broken = b.broken = True
    for i in range(6):
        server.issue([req(i)])
    assert server.health.state == ["ejected", "ejected"]
    assert sum(server.issued) == 6 and len(collector.finals()) == 6  # failed, not lost


def test_ejection_off_and_breaker_flags_checked(collector):
    a, b = Flaky(0, collector), Flaky(1, collector)
    server = LLMServer([a, b], make_policy("round_robin", 2, flags={"eject_after": 0}))
    a.broken = True
    for i in range(10):
        server.issue([req(i)])
    assert server.issued == [5, 5] and not server.health.events
    p = make_policy("kv_aware", 2, flags={"eject_s": 2.5, "max_eject_s": 60})
    h = CoreHealth([a, b], p.eject_after, p.eject_s, p.max_eject_s)
    assert (h.eject_ns, h.max_eject_ns) == (2_500_000_000, 60_000_000_000)


def test_a_dead_decode_core_is_passed_over(collector):
    cfg = make_cfg(engine_profile="fixed", engine_flags={"ttft_ms": 1, "tpot_ms": 1})
    pre = [DummyCore(0, cfg, role="prefill")]
    dec = [DummyCore(1, cfg.replace(dummy_fail_after=0), role="decode"),
           DummyCore(2, cfg, role="decode")]  # fmt: skip
    server = PDServer(pre, dec, make_policy("round_robin", 1), make_policy("least_pending", 2),
                      KVTransfer(0, 0))  # fmt: skip
    server.set_callback(collector)
    try:
        server.issue([req(0, stream=True)])
        assert collector.wait_for(lambda: len(collector.finals()) == 1)
        for i in range(1, 20):
            server.issue([req(i, stream=True)])
        assert collector.wait_for(lambda: len(collector.finals()) == 20)
    finally:
        server.close()
    ok = [r for r in collector.finals().values() if r.ok]
    assert len(ok) == 19 and all(r.core_id == 2 for r in ok)
    assert server.decode_health.state == ["down", "up"]


def test_cycles_left_by_failures_are_swept_while_the_gc_is_off():
    import gc
    import time
    import weakref
    from types import SimpleNamespace

    from harness.run.runner import SweepAfterFailures
    from llmlib.serving.core import Telemetry

    class Node:
        pass

    core = SimpleNamespace(telemetry=Telemetry())
    was_on = gc.isenabled()
    gc.disable()  # as during a test
    try:
        a = Node()
        a.me = a  # a reference cycle: only the cyclic GC frees it
        ref = weakref.ref(a)
        del a
        with SweepAfterFailures([core], period_s=0.02):
            time.sleep(0.2)
            assert ref() is not None  # no failure: no sweep
            core.telemetry.failed += 1
            deadline = time.monotonic() + 5
            while ref() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
        assert ref() is None
    finally:
        if was_on:
            gc.enable()


def test_memory_trace_names_the_site_that_grew_and_costs_nothing_when_off():
    from harness.run.runner import MemoryTrace

    kept = []
    with MemoryTrace(True) as trace:
        kept.extend(bytearray(1000) for _ in range(2000))  # ~2 MB held past the end
    assert trace.growth is not None
    top = trace.growth[0]
    assert "test_health.py" in top["site"] and top["bytes"] > 1_900_000
    with MemoryTrace(False) as off:
        kept.append(bytearray(10))
    assert off.growth is None
