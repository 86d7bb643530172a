"""A Server run's delivery (completed/s against the scheduled QPS, flagged UNDER-DELIVERED
past the tolerance) and goodput (requests that met both token latency limits)."""

from __future__ import annotations

import pytest

from harness.report.delivery import delivery, delivery_lines, goodput
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
