"""The dummy core in real code paths, timed by a virtual clock (exact, repeatable)."""

import numpy as np
import pytest

from cores.dummy import DummyCore
from llmlib.model.clock import VirtualClock
from llmlib.model.pseudo_tokens import pseudo_tokens
from llmlib.serving.request import LLMRequest
from tests.conftest import make_cfg

FLAGS = {
    "kind": "batching",
    "max_batch_size": 8,
    "max_num_tokens": 512,
    "step_base_us": 1000,
    "step_per_seq_us": 100,
    "prefill_per_token_us": 10,
}


def req(i, prompt=20, out=5, stream=True, ref=None):
    return LLMRequest(i, i, np.ones(prompt, np.uint32), 64, stream, out, ref, 0)


def core(collector, clock=None, **cfg):
    return DummyCore(0, make_cfg(**cfg), collector, clock=clock)


def test_responses_arrive_at_the_modelled_times(collector):
    c = core(collector, VirtualClock(), engine_flags=FLAGS)
    try:
        c.enqueue([req(1, prompt=20, out=5), req(2, prompt=40, out=3)])
        assert collector.wait_for(lambda: len(collector.finals()) == 2)
    finally:
        c.close()
    times = {(r.request_id, r.is_final): r.time_ns for r in collector.responses}
    # one step prefills both prompts (60 tokens): 1 ms + 60 * 10 us
    assert times[(1, False)] == times[(2, False)] == 1_600_000
    # then decode steps of 1 ms + 2 * 100 us
    assert times[(2, True)] == 1_600_000 + 2 * 1_200_000
    assert times[(1, True)] == 1_600_000 + 2 * 1_200_000 + 2 * 1_100_000


def test_a_prefix_cache_spares_a_repeated_prompt_s_prefill(collector):
    c = core(collector, VirtualClock(), engine_flags={**FLAGS, "prefix_cache_blocks": 100})
    try:
        c.enqueue([req(1, prompt=100, out=1)])  # 6 full blocks of 16, 4 tokens past them
        assert collector.wait_for(lambda: len(collector.finals()) == 1)
        t0 = c.clock.now_ns()
        c.enqueue([LLMRequest(2, 1, np.ones(100, np.uint32), 64, True, 1, None, t0)])
        assert collector.wait_for(lambda: len(collector.finals()) == 2)
    finally:
        c.close()
    first = {r.request_id: r.time_ns for r in collector.responses if not r.is_final}
    assert first[1] == 1_000_000 + 100 * 10_000  # all 100 prompt tokens
    assert first[2] - t0 == 1_000_000 + 4 * 10_000  # the 96 cached tokens are not redone


def test_tokens_are_deterministic_reference_first_and_first_token_is_a_prefix(collector):
    ref = np.array([7, 8, 9, 2], dtype=np.uint32)
    c = core(collector, VirtualClock(), engine_flags=FLAGS, vocab_size=100, seed=3)
    try:
        c.enqueue([req(1, out=6), req(2, ref=ref)])
        assert collector.wait_for(lambda: len(collector.finals()) == 2)
    finally:
        c.close()
    fin = collector.finals()
    assert list(fin[2].output_tokens) == [7, 8, 9, 2]
    expected = pseudo_tokens(3, 100, 1, 6)
    assert list(fin[1].output_tokens) == list(expected)
    assert all(3 <= t < 100 for t in expected)  # never an EOS or special id
    first = {r.request_id: r for r in collector.responses if not r.is_final}
    for rid in (1, 2):
        assert list(fin[rid].output_tokens[:1]) == list(first[rid].output_tokens)


def test_non_streaming_requests_get_only_a_final(collector):
    c = core(collector, VirtualClock(), engine_flags=FLAGS)
    try:
        c.enqueue([req(1, stream=False)])
        assert collector.wait_for(lambda: len(collector.finals()) == 1)
    finally:
        c.close()
    assert [r.is_final for r in collector.responses] == [True]


def test_zero_profile_answers_in_the_callers_thread(collector):
    c = core(collector, engine_profile="zero")
    c.enqueue([req(i) for i in range(5)])
    assert len(collector.finals()) == 5 and c.pending == 0
    assert len(collector.batches) == 1  # one batch for the whole enqueue
    c.close()


def test_telemetry_tracks_pending_and_moving_averages(collector):
    c = core(
        collector,
        VirtualClock(),
        engine_flags={**FLAGS, "kind": "fixed", "ttft_ms": 2, "tpot_ms": 1},
    )
    try:
        c.enqueue([req(1, out=11), req(2, out=11)])
        assert collector.wait_for(lambda: len(collector.finals()) == 2)
        assert c.flush(1.0) and c.pending == 0
    finally:
        c.close()
    assert c.telemetry.ttft_ewma_ns == pytest.approx(2_000_000)
    assert c.telemetry.tpot_ewma_ns == pytest.approx(1_000_000)
    assert c.telemetry.completed == 2 and c.telemetry.tokens == 22


def test_an_engine_that_dies_fails_every_pending_request_and_later_ones(collector):
    c = core(collector, engine_flags={**FLAGS, "step_base_us": 50_000}, dummy_fail_after=3)
    try:
        c.enqueue([req(i) for i in range(2)])
        c.enqueue([req(i) for i in range(2, 5)])  # crosses the limit: the engine dies
        assert collector.wait_for(lambda: len(collector.finals()) == 5)
        c.enqueue([req(9)])
        assert collector.wait_for(lambda: len(collector.finals()) == 6)
    finally:
        c.close()
    fin = collector.finals()
    assert all(not r.ok for r in fin.values())
    assert "injected failure" in fin[0].error
    assert "is down" in fin[9].error
    assert not c.alive and c.pending == 0


def test_a_dead_engine_thread_outlives_the_test_until_close(collector):
    # the thread delivered to the callback (LoadGen in a run): ending it while LoadGen runs
    # lets LoadGen's I/O thread touch its freed log buffers (SIGSEGV), so it parks
    c = core(collector, engine_flags={**FLAGS, "step_base_us": 50_000}, dummy_fail_after=0)
    c.enqueue([req(0)])
    assert collector.wait_for(lambda: len(collector.finals()) == 1)
    thread = c._thread
    assert thread is not None
    thread.join(0.3)
    assert thread.is_alive() and not c.alive
    c.close()
    thread.join(5)
    assert not thread.is_alive()


def test_warmup_mode_keeps_responses_from_the_callback(collector):
    c = core(collector, engine_profile="zero")
    with c.warmup_mode():
        c.enqueue([req(1)])
    c.enqueue([req(2)])
    assert list(collector.finals()) == [2]


def test_close_fails_what_is_still_pending(collector):
    c = core(collector, engine_flags={**FLAGS, "step_base_us": 5_000_000})
    c.enqueue([req(1)])
    c.close()
    fin = collector.finals()
    assert fin[1].error == "core closed with work pending"
