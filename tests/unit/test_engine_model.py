"""The engine model's timings, in virtual time (no clocks, no sleeps)."""

import pytest

from llmlib.errors import UnknownNameError
from llmlib.model.engine import (
    BatchingModel,
    EngineProfile,
    FixedModel,
    load_profiles,
    make_model,
)

P = EngineProfile(
    max_batch_size=4,
    max_num_tokens=1000,
    step_base_ns=1000,
    step_per_seq_ns=100,
    prefill_per_token_ns=10,
)


def run_all(model, step=None):
    """Drive to completion; with ``step`` advance in small increments instead of jumping."""
    events, t = [], 0
    while (w := model.next_wakeup_ns()) is not None:
        t = w if step is None else max(t + step, 0)
        events += model.advance(t)
    return events


def firsts(events):
    return {sid: t for t, sid, final in events if not final}


def finals(events):
    return {sid: t for t, sid, final in events if final}


def test_fixed_model_first_and_final_times():
    m = FixedModel(EngineProfile(kind="fixed", ttft_ns=50, tpot_ns=10))
    m.submit(1, 100, 7, 5)
    m.submit(2, 120, 7, 1)
    ev = run_all(m)
    assert firsts(ev) == {1: 150, 2: 170}
    assert finals(ev) == {1: 150 + 4 * 10, 2: 170}
    assert m.running == 0


def test_prefill_time_is_proportional_to_prompt_tokens():
    ttft = {}
    for n in (100, 300):
        m = BatchingModel(P)
        m.submit(1, 0, n, 2)
        ttft[n] = firsts(run_all(m))[1]
    assert ttft[100] == 1000 + 10 * 100
    assert ttft[300] - ttft[100] == 10 * 200


def test_decode_step_time_grows_with_batch_size():
    def tpot(batch):
        m = BatchingModel(P)
        for i in range(batch):
            m.submit(i, 0, 10, 11)
        ev = run_all(m)
        return (finals(ev)[0] - firsts(ev)[0]) / 10

    assert tpot(1) == 1000 + 100 * 1
    assert tpot(4) == 1000 + 100 * 4


def test_max_batch_size_makes_the_fifth_request_wait_for_a_slot():
    m = BatchingModel(P)
    for i in range(4):
        m.submit(i, 0, 10, 3)
    m.submit(4, 0, 10, 3)
    ev = run_all(m)
    assert firsts(ev)[4] > max(finals(ev)[i] for i in range(4)) - 1
    assert finals(ev)[4] > firsts(ev)[4]


def test_max_num_tokens_chunks_a_long_prompt_over_steps():
    m = BatchingModel(P)
    m.submit(1, 0, 2500, 1)  # 1000 + 1000 + 500 prompt tokens
    ev = run_all(m)
    assert firsts(ev)[1] == 3 * 1000 + 10 * 2500


def test_first_token_precedes_final_and_every_request_finishes_once():
    m = BatchingModel(P)
    for i in range(20):
        m.submit(i, i * 500, 50 + i * 7, 1 + i % 6)
    ev = run_all(m)
    assert sorted(finals(ev)) == list(range(20))
    assert len([e for e in ev if e[2]]) == 20
    for sid in range(20):
        assert firsts(ev)[sid] <= finals(ev)[sid]
    assert [t for t, _, _ in ev] == sorted(t for t, _, _ in ev)


def test_jumping_over_decode_spans_equals_stepping_through_them():
    def load(m):
        for i in range(12):
            m.submit(i, i * 3000, 40 + 13 * i, 5 + (i * 7) % 40)
        return m

    jumped = run_all(load(BatchingModel(P)))
    stepped = run_all(load(BatchingModel(P)), step=137)
    assert firsts(jumped) == firsts(stepped)
    assert finals(jumped) == finals(stepped)


def test_an_arrival_during_a_decode_span_is_admitted_at_the_next_step_boundary():
    m = BatchingModel(P)
    m.submit(1, 0, 10, 100)
    m.advance(0)
    first1 = 1000 + 10 * 10
    m.advance(first1 + 5 * 1100 + 1)  # five decode steps of 1100 ns later
    m.submit(2, first1 + 5 * 1100 + 1, 10, 2)
    ev = run_all(m)
    boundary = first1 + 6 * 1100
    # the step that prefills request 2 starts at the boundary after its arrival
    assert firsts(ev)[2] == boundary + 1000 + 100 * 1 + 10 * 10


def test_profiles_load_from_yaml_and_zero_answers_at_once(tmp_path):
    from llmlib.config.settings import REPO_ROOT

    profiles = load_profiles(REPO_ROOT / "configs" / "engine_profiles.yaml")
    assert {"zero", "cpu-tiny", "h100-llama2-70b"} <= set(profiles)
    assert profiles["zero"].is_zero
    assert profiles["cpu-tiny"].step_base_ns == 2_000_000
    m = make_model(profiles["zero"])
    m.submit(1, 5, 10, 10)
    assert m.advance(5) == [(5, 1, False), (5, 1, True)]
    bad = tmp_path / "p.yaml"
    bad.write_text("x: {tpot_msec: 3}\n")
    with pytest.raises(UnknownNameError, match="tpot_msec"):
        load_profiles(bad)


def test_overrides_use_unit_suffixes():
    p = P.with_overrides({"ttft_ms": 2, "step_base_us": 3.5, "max_batch_size": 9})
    assert (p.ttft_ns, p.step_base_ns, p.max_batch_size) == (2_000_000, 3500, 9)


def test_a_sequence_prefilled_elsewhere_decodes_one_token_per_step_with_no_first_event():
    m = BatchingModel(P)
    m.submit_decode(1, 0, 3)  # 3 tokens to decode, no prefill
    ev = run_all(m)
    assert firsts(ev) == {}
    assert finals(ev) == {1: 3 * (1000 + 100)}  # three decode steps of one sequence
    # joining a running batch: it decodes alongside, and the step grows by one sequence
    m = BatchingModel(P)
    m.submit(1, 0, 10, 4)  # prefill 10 tokens (1100 ns), then 3 decode steps
    m.submit_decode(2, 0, 2)
    ev = run_all(m)
    assert firsts(ev) == {1: 1000 + 100 + 10 * 10}  # the joiner decodes in that step too
    assert finals(ev)[2] == 1200 + (1000 + 200)  # its 2nd token in the next step (2 seqs)
    assert finals(ev)[1] == 1200 + 1200 + 2 * 1100  # 1's decode steps: 2 seqs, then 1, 1


def test_fixed_model_decode_only_is_tokens_times_tpot():
    m = FixedModel(EngineProfile(kind="fixed", ttft_ns=50, tpot_ns=7))
    m.submit_decode(4, 100, 3)
    assert run_all(m) == [(121, 4, True)]
