"""The settled-INVALID rule of ``--stop_when_invalid`` (``harness.run.stop_early``): a run is
stopped only when no queries still to come could make it pass."""

from types import SimpleNamespace

import numpy as np
import pytest

from harness.run.stop_early import Limits, settled

MS = 1_000_000


def limits(**kw):
    ts = SimpleNamespace(min_query_count=400, server_target_qps=100.0, min_duration_ms=3000,
                         use_token_latencies=True, server_target_latency_percentile=0.99,
                         ttft_latency=2000 * MS, tpot_latency=200 * MS,
                         server_target_latency_ns=0)  # fmt: skip
    for k, v in kw.items():
        setattr(ts, k, v)
    return Limits.of(ts)


def table(rows):
    """rows: (issue_ms, first_ms or 0, final_ms or 0, n_tokens, error)."""
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    t = {k: np.asarray([int(x * MS) for x in c], np.int64)
         for k, c in zip(("issue_ns", "first_ns", "final_ns"), cols[:3], strict=True)}  # fmt: skip
    t["n_tokens"] = np.asarray(cols[3], np.int64)
    t["error"] = np.asarray(cols[4], dtype=object)
    return t


def test_the_most_queries_a_run_can_issue_and_what_its_p99_allows():
    lim = limits()  # max(400, 100 QPS x 3 s) = 400 expected, 500 at most: 5 may be late
    assert (lim.most_queries, lim.allowed) == (500, 5)
    lim = limits(server_target_qps=1000.0)  # 3,000 expected
    assert (lim.most_queries, lim.allowed) == (3750, 37)


def test_late_first_tokens_settle_it_only_past_what_the_p99_allows():
    lim = limits()
    ok = [(i, i + 100, i + 500, 16, "") for i in range(100)]
    late = [(1000 + i, 1000 + i + 2500, 1000 + i + 3000, 16, "") for i in range(5)]
    assert settled(table(ok + late), 10_000 * MS, lim) is None  # 5 late: p99 can still hold
    f = settled(table(ok + late + late[:1]), 10_000 * MS, lim)
    assert f and f["limit"] == "TTFT" and f["count"] == 6 and f["waiting"] == 0


def test_requests_still_waiting_past_the_limit_count_as_late():
    lim = limits()
    waiting = [(100 + i, 0, 0, 0, "") for i in range(6)]  # no first token yet
    assert settled(table(waiting), 2000 * MS, lim) is None  # waited < 2 s so far
    f = settled(table(waiting), 2200 * MS, lim)
    assert f and f["waiting"] == 6 and "still waiting" in f["reason"]


def test_a_first_token_that_came_late_counts_before_the_request_ends():
    lim = limits()
    rows = [(0, 2100, 0, 0, "") for _ in range(6)]  # open, first token late
    f = settled(table(rows), 2200 * MS, lim)
    assert f and f["limit"] == "TTFT" and f["waiting"] == 0


def test_tpot_of_finished_requests():
    lim = limits()
    slow = [(0, 10, 10 + 15 * 210, 16, "") for _ in range(6)]  # 210 ms a token
    f = settled(table(slow), 10_000 * MS, lim)
    assert f and f["limit"] == "TPOT" and f["count"] == 6
    fast = [(0, 10, 10 + 15 * 190, 16, "") for _ in range(50)]
    assert settled(table(fast), 10_000 * MS, lim) is None


def test_one_failed_request_settles_it():
    rows = [(0, 10, 100, 16, ""), (1, 0, 50, 0, "ConnectionResetError()")]
    f = settled(table(rows), 200 * MS, limits())
    assert f and f["limit"] == "failures" and f["count"] == 1


def test_whole_latency_without_token_latencies():
    lim = limits(use_token_latencies=False, server_target_latency_ns=100 * MS)
    rows = [(0, 0, 150, 16, "") for _ in range(6)]
    f = settled(table(rows), 200 * MS, lim)
    assert f and f["limit"] == "latency"
    assert settled(table(rows[:5]), 200 * MS, lim) is None


@pytest.mark.parametrize("rows", [[], [(0, 0, 0, 0, "")]])
def test_nothing_to_judge_yet(rows):
    assert settled(table(rows), 100 * MS, limits()) is None
