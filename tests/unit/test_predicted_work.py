"""predicted_work (issue 24): each request to the core where it would share its decode with
the least work, what each core holds counted as each request's remaining predicted tokens.
Choices checked against hand-computed sums."""

import pytest

from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest
from llmlib.serving.core import Telemetry
from llmlib.serving.policies import make_policy
from llmlib.serving.predicted import PredictedWork
from llmlib.serving.request import LLMRequest


def req(rid: int, out: int, issue_ns: int = 0, prompt: int = 4, max_new: int = 4096) -> LLMRequest:
    return LLMRequest(rid, rid, list(range(prompt)), max_new, output_len=out, issue_ns=issue_ns)


def policy(n: int = 2, **flags) -> tuple[PredictedWork, list[set[int]]]:
    p = make_policy("predicted_work", n, flags=flags)
    assert isinstance(p, PredictedWork)
    held: list[set[int]] = [set() for _ in range(n)]
    p.bind_pending(held)
    return p, held


def place(p: PredictedWork, held: list[set[int]], loads: list[int], r: LLMRequest) -> int:
    (i,) = p.assign([r], loads)
    held[i].add(r.request_id)
    return i


def hold(p: PredictedWork, held: list[set[int]], loads: list[int], core: int, r: LLMRequest):
    """``r`` held by ``core``, as if the policy had placed it there."""
    p._place(core, r, r.issue_ns, p.predict(r), loads)
    held[core].add(r.request_id)


def test_short_requests_go_beside_one_long_one_and_long_ones_beside_short_ones():
    p, held = policy()
    loads = [0, 0]
    hold(p, held, loads, 0, req(1, 1000))
    for rid in (2, 3, 4):
        hold(p, held, loads, 1, req(rid, 10))
    # a 5-token request: core 0 shares min(1000, 5) = 5, core 1 3 x 5 = 15
    assert p.assign([req(5, 5)], list(loads)) == [0]
    # a 1,000-token request: core 0 shares 1,000, core 1 3 x 10 = 30 (least_pending: core 0)
    assert p.assign([req(6, 1000)], list(loads)) == [1]
    assert make_policy("least_pending", 2).assign([req(6, 1000)], list(loads)) == [0]


def test_placing_one_at_a_time_follows_the_sums():
    p, held = policy()
    loads = [0, 0]
    assert place(p, held, loads, req(1, 1000)) == 0  # both empty: the lowest index
    assert place(p, held, loads, req(2, 10)) == 1  # shares 10 with core 0, 0 with core 1
    assert place(p, held, loads, req(3, 10)) == 0  # 10 and 10, 1 pending each: core 0
    assert place(p, held, loads, req(4, 500)) == 1  # 510 on core 0, 10 on core 1


def test_what_a_core_has_decoded_since_is_taken_off_by_its_tpot():
    p, held = policy()
    loads = [0, 0]
    place(p, held, loads, req(1, 1000, issue_ns=0))  # core 0
    place(p, held, loads, req(2, 100, issue_ns=0))  # core 1: shares 100 < 1000
    tels = [Telemetry(), Telemetry()]
    for t in tels:
        t.observe_ttft(0)
        t.observe_tpot(1e6)  # 1 ms a token
    p.bind(tels)
    # 950 ms on: core 0's request has 50 tokens left, core 1's 1 (at least one: still held)
    # a 200-token request shares 50 with core 0 and 1 with core 1
    assert p.remaining(0, 950_000_000) == [50.0] and p.remaining(1, 950_000_000) == [1.0]
    assert p.assign([req(3, 200, issue_ns=950_000_000)], list(loads)) == [1]


def test_what_a_core_no_longer_holds_is_forgotten():
    p, held = policy()
    loads = [0, 0]
    place(p, held, loads, req(1, 1000))
    place(p, held, loads, req(2, 1000))
    held[0].discard(1)  # core 0's request finished
    loads = [0, 1]
    assert p.assign([req(3, 1000)], loads) == [0]
    assert list(p.placed[0]) == [3] and list(p.placed[1]) == [2]


def test_a_large_batch_is_placed_longest_first_on_the_least_work():
    p, _ = policy()
    lengths = [100, 5, 90, 10] + [1] * 100  # over BATCH: 104 requests at once
    got = p.assign([req(i, n) for i, n in enumerate(lengths)], [0, 0])
    # 100 to core 0, 90 to core 1, 10 to core 1 (90 < 100), 5 to core 0 (100 = 100: core 0
    # has fewer pending), then the ones fill in
    assert got[:4] == [0, 0, 1, 1]
    work = [sum(n for n, c in zip(lengths, got, strict=True) if c == k) for k in (0, 1)]
    assert abs(work[0] - work[1]) <= 1


def test_what_it_predicts_and_its_flags():
    p, _ = policy(prefill_weight=0.5)
    assert p.predict(req(1, 10, prompt=8)) == 14  # 10 + 0.5 x 8
    assert p.predict(LLMRequest(2, 2, [1, 2], 64)) == 65  # no reference length: max_new + 1
    assert p.predict(SimRequest(0, 8, 10)) == 14
    assert policy(length="max_new_tokens")[0].predict(SimRequest(0, 8, 10)) == 1  # no cap
    q, _ = policy(length="max_new_tokens")
    assert q.predict(req(1, 10, max_new=300)) == 300
    with pytest.raises(ConfigError, match="length: tea is not one of oracle, max_new_tokens"):
        policy(length="tea")
    with pytest.raises(ConfigError, match="negative"):
        policy(prefill_weight=-1)
