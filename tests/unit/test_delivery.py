"""A Server run's delivery (completed/s against the scheduled QPS, flagged UNDER-DELIVERED
past the tolerance) and goodput (requests that met both token latency limits)."""

from __future__ import annotations

import pytest

from harness.report.delivery import delivery, delivery_lines, goodput, window_ratio
from llmlib.serving.request import failed_response
from llmlib.serving.request_log import RequestLog
from tests.unit.test_request_log import answer, req

MS = 1_000_000


def server(done, sched):
    return {"scenario": "Server", "samples_per_second": done,
            "scheduled_samples_per_second": sched}  # fmt: skip


def test_delivery_flags_a_run_that_trails_its_schedule():
    ok = delivery(server(99.0, 100.0), 0.02)
    assert ok is not None and ok["ratio"] == pytest.approx(0.99) and not ok["under_delivered"]
    low = delivery(server(97.0, 100.0), 0.02)
    assert low is not None and low["under_delivered"]
    assert delivery(server(97.0, 100.0), 0.05)["under_delivered"] is False
    # no verdict without the figures, nor outside Server
    assert delivery(server(97.0, None), 0.02) is None
    assert delivery(server(97.0, 0.0), 0.02) is None
    assert delivery({**server(97.0, 100.0), "scenario": "Offline"}, 0.02) is None
    lines = delivery_lines({"delivery": low, "goodput": None})
    assert lines == ["- **UNDER-DELIVERED**: completed 97.00/s of 100.00 QPS scheduled "
                     "(97.0%; tolerance 2%)"]  # fmt: skip


def test_goodput_counts_requests_within_both_limits():
    log = RequestLog()
    log.on_issue([req(q, issue_ns=0) for q in range(5)])
    log.on_responses(
        answer(0, 1 * MS, 10 * MS)  # TTFT 1 ms, TPOT 1 ms: good
        + answer(1, 3 * MS, 12 * MS)  # TTFT 3 ms: over
        + answer(2, 1 * MS, 46 * MS)  # TPOT 5 ms: over
        + answer(3, 2 * MS, 20 * MS)  # TTFT 2 ms, TPOT 2 ms: at both limits, good
        + [failed_response(4, "boom", MS, 0)]  # failed: never good
    )
    lg = {"ttft_limit_ns": 2 * MS, "tpot_limit_ns": 2 * MS}
    g = goodput(log, 2_000_000_000, lg)
    assert g is not None and (g["good"], g["issued"]) == (2, 5)
    assert g["share"] == pytest.approx(0.4) and g["per_second"] == pytest.approx(1.0)
    assert goodput(log, 1, {"ttft_limit_ns": None, "tpot_limit_ns": 2 * MS}) is None
    assert goodput(RequestLog(), 1, lg) is None


def queue_log(n, gap_ms, service_ms):
    """``n`` requests issued every ``gap_ms``, served one at a time in ``service_ms`` each."""
    log, free = RequestLog(), 0
    log.on_issue([req(q, issue_ns=q * gap_ms * MS) for q in range(n)])
    for q in range(n):
        start = max(free, q * gap_ms * MS)
        free = start + service_ms * MS
        log.on_responses(answer(q, start + MS, free))
    return log


def test_the_verdict_comes_from_the_steady_window_not_the_tail():
    """A server that keeps up (5 ms of work every 10 ms) has everything done one latency
    after the last issue: its ratio is 1, though LoadGen's rate (to the last completion)
    trails on a short run; one that needs 12 ms per 10 ms is left with its backlog."""
    lg = server(95.0, 100.0)  # LoadGen's ratio 95%: the tail of a short run
    keeps_up = delivery(lg, 0.02, queue_log(400, 10, 5))
    assert keeps_up["window_ratio"] == pytest.approx(1.0, abs=0.01)
    assert keeps_up["loadgen_ratio"] == pytest.approx(0.95) and not keeps_up["under_delivered"]
    behind = delivery(lg, 0.02, queue_log(400, 10, 12))
    # 10/12 of the load served, plus what the early latency (~0.2 s of backlog) lets finish
    assert behind["window_ratio"] == pytest.approx(0.87, abs=0.02) and behind["under_delivered"]
    assert f"{behind['window_ratio']:.1%} done within" in delivery_lines({"delivery": behind})[0]
    assert window_ratio(queue_log(20, 10, 5)) is None  # too few issues to judge
    assert delivery(lg, 0.02, RequestLog())["ratio"] == pytest.approx(0.95)  # LoadGen's then


def test_a_cold_start_does_not_excuse_a_backlog():
    """The first quarter answered 3 s late (a server just started), then a backlog growing
    at 2 ms per 10 ms: the second quarter's shorter latency sets the window, not the cold
    start's (which alone would have counted everything done)."""
    log, free = RequestLog(), 0
    log.on_issue([req(q, issue_ns=q * 10 * MS) for q in range(400)])
    for q in range(400):
        start = max(free, q * 10 * MS)
        free = start + 12 * MS
        cold = 3000 * MS if q < 100 else 0
        log.on_responses(answer(q, start + MS + cold, free + cold))
    ratio = window_ratio(log)
    assert ratio is not None and 0.88 < ratio < 0.95  # (3 s of lag would say 1.0)


def test_failed_requests_are_not_delivered():
    """A server that hangs after its first quarter: the harness fails every open request
    promptly (its stall watch), so each one ends soon after it was issued. LoadGen counts
    them completed; delivery must not (seen on llama.cpp with CUDA: 299 of 300 failed, and
    the run read 100% delivered)."""
    log = RequestLog()
    log.on_issue([req(q, issue_ns=q * 10 * MS) for q in range(400)])
    log.on_responses(
        [r for q in range(100) for r in answer(q, q * 10 * MS + MS, q * 10 * MS + 5 * MS)]
    )
    log.on_responses(
        [failed_response(q, "stalled", q * 10 * MS + 20 * MS, 0) for q in range(100, 400)]
    )
    ratio = window_ratio(log)
    assert ratio == pytest.approx(0.25)
    assert delivery(server(100.0, 100.0), 0.02, log)["under_delivered"]
    # all failed: nothing delivered, not an error
    none = RequestLog()
    none.on_issue([req(q, issue_ns=q * 10 * MS) for q in range(40)])
    none.on_responses([failed_response(q, "down", q * 10 * MS + MS, 0) for q in range(40)])
    assert window_ratio(none) == 0.0
