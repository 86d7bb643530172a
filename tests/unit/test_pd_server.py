"""Disaggregated prefill/decode pools of live dummy cores (real threads, real time): the
first token from the prefill pool, the final from the decode pool after the KV transfer,
each pool's telemetry, and nothing lost when a core dies or the server closes."""

import time

import numpy as np
import pytest

from cores.dummy import DummyCore
from llmlib.errors import ConfigError
from llmlib.serving.disagg import PDServer
from llmlib.serving.kv_transfer import KVTransfer
from llmlib.serving.policies import make_policy
from llmlib.serving.request import LLMRequest
from tests.conftest import make_cfg

FIXED = {"kind": "fixed", "ttft_ms": 5, "tpot_ms": 1}
KV = KVTransfer(base_ns=2_000_000, per_token_ns=10_000)  # 2 ms + 10 us a token


def pd(collector, prefill=2, decode=2, decode_cfg=None, flags=FIXED):
    cfg = make_cfg(engine_flags=flags)
    pre = [DummyCore(i, cfg, role="prefill") for i in range(prefill)]
    dcfg = make_cfg(engine_flags=flags, **(decode_cfg or {}))
    dec = [DummyCore(prefill + i, dcfg, role="decode") for i in range(decode)]
    server = PDServer(
        pre, dec, make_policy("round_robin", prefill), make_policy("least_pending", decode), KV
    )
    server.set_callback(collector)
    return server


def reqs(n, out=8, stream=True, prompt=100):
    now = time.perf_counter_ns()
    ref = lambda i: np.arange(i, i + out, dtype=np.uint32)  # noqa: E731
    return [
        LLMRequest(i, i, np.ones(prompt, np.uint32), 64, stream, out, ref(i), now) for i in range(n)
    ]


def test_first_token_from_prefill_final_from_decode_after_the_kv_transfer(collector):
    server = pd(collector)
    one = np.array([7], np.uint32)
    batch = reqs(20) + [
        LLMRequest(99, 99, np.ones(50, np.uint32), 64, True, 1, one, time.perf_counter_ns())
    ]
    try:
        server.issue(batch)
        assert server.flush(10)
    finally:
        server.close()
    by = {r.request_id: r for r in batch}
    firsts = {r.request_id: r for r in collector.responses if not r.is_final}
    finals = {r.request_id: r for r in collector.responses if r.is_final}
    assert len(firsts) == len(finals) == 21 and len(collector.responses) == 42
    for rid, f in finals.items():
        assert f.error is None
        assert np.array_equal(f.output_tokens, by[rid].reference_tokens)  # the whole answer
        assert np.array_equal(firsts[rid].output_tokens, by[rid].reference_tokens[:1])
        assert firsts[rid].time_ns - by[rid].issue_ns >= 5_000_000
        assert firsts[rid].core_id in (0, 1)  # the prefill pool
        if rid == 99:  # one token: done at prefill, never handed over
            assert f.core_id in (0, 1) and f.time_ns == firsts[rid].time_ns
            continue
        assert f.core_id in (2, 3)  # the decode pool
        # the transfer (2 ms + 1 ms for 100 tokens) then 7 more tokens at 1 ms
        assert f.time_ns - firsts[rid].time_ns >= 3_000_000 + 7_000_000
    assert server.issued[:2] == [11, 10] and sum(server.issued[2:]) == 20
    assert server.handed_over == 20 and server.pending == 0
    # each pool's telemetry is what the coordinator measured
    assert all(c.telemetry.ttft_ewma_ns >= 5e6 for c in server.cores[:2])
    assert all(
        c.telemetry.tpot_ewma_ns >= 1e6 for c in server.cores[2:] if c.telemetry.tpot_ewma_ns
    )
    assert any(c.telemetry.tpot_ewma_ns for c in server.cores[2:])


def test_non_streamed_requests_get_only_their_final(collector):
    server = pd(collector, prefill=1, decode=1)
    try:
        server.issue(reqs(5, stream=False))
        assert server.flush(10)
    finally:
        server.close()
    assert len(collector.responses) == 5 and all(r.is_final for r in collector.responses)


def test_a_decode_core_dying_fails_its_requests_and_nothing_hangs(collector):
    server = pd(collector, prefill=1, decode=1, decode_cfg={"dummy_fail_after": 3})
    try:
        server.issue(reqs(12))
        assert server.flush(10)  # every request ended: answered or failed
    finally:
        server.close()
    finals = [r for r in collector.responses if r.is_final]
    assert len(finals) == 12
    failed = [r for r in finals if r.error]
    assert failed and all("core 1" in r.error for r in failed)
    assert len(finals) - len(failed) <= 3


def test_closing_mid_run_completes_everything_as_failed(collector):
    server = pd(
        collector, prefill=1, decode=1, flags={"kind": "fixed", "ttft_ms": 5, "tpot_ms": 200}
    )
    server.issue(reqs(6))
    time.sleep(0.05)
    server.close()
    finals = [r for r in collector.responses if r.is_final]
    assert len(finals) == 6 and all(r.error for r in finals)
    assert server.pending == 0


def test_bad_pools_are_refused():
    cfg = make_cfg(engine_flags=FIXED)
    cores = [DummyCore(1, cfg, role="prefill"), DummyCore(0, cfg, role="decode")]
    with pytest.raises(ValueError, match="core ids"):
        PDServer(
            cores[:1], cores[1:], make_policy("round_robin", 1), make_policy("round_robin", 1), KV
        )
    for c in cores:
        c.close()
    with pytest.raises(ConfigError, match="takes time"):
        DummyCore(0, make_cfg(engine_profile="zero"), role="decode")
