"""RequestLog: the request path appends, a monitor folds; nothing may be lost in between."""

import threading

import numpy as np

from llmlib.metrics import RequestLog
from llmlib.request import LLMRequest, LLMResponse, failed_response

TOK = np.arange(3, 13, dtype=np.uint32)  # 10 tokens


def req(qid, issue_ns=1_000):
    return LLMRequest(qid, qid % 7, TOK, 64, True, None, None, issue_ns)


def answer(qid, t_first=2_000, t_final=11_000):
    return [LLMResponse(qid, TOK[:1], False, t_first), LLMResponse(qid, TOK, True, t_final, 1)]


def test_columns_in_issue_order_with_ttft_and_tpot():
    log = RequestLog()
    log.on_issue([req(5), req(9)])
    log.on_responses(answer(9) + answer(5, 3_000, 12_000))
    assert log.column("qid") == [5, 9]
    assert log.column("first_ns") == [3_000, 2_000]
    assert log.completed == 2 and log.failed == 0 and log.tokens == 20
    ttft, tpot = log.latencies()
    assert sorted(ttft) == [1_000, 2_000]
    assert sorted(tpot) == [1_000, 1_000]  # (11_000 - 2_000) / 9


def test_responses_for_unknown_or_finished_requests_are_ignored():
    log = RequestLog()
    log.on_issue([req(1)])
    log.on_responses(answer(1) + answer(2) + [LLMResponse(1, TOK[:1], False, 50_000)])
    assert log.completed == 1 and len(log) == 1
    assert log.column("first_ns") == [2_000]


def test_failures_are_counted_with_their_reason():
    log = RequestLog()
    log.on_issue([req(1), req(2)])
    log.on_responses([failed_response(1, "boom", 5_000, 0)] + answer(2))
    assert (log.completed, log.failed) == (1, 1)
    assert log.column("error") == ["boom", ""]


def test_has_first_sees_a_first_token_of_an_open_request():
    log = RequestLog()
    log.on_issue([req(1), req(2)])
    log.on_responses(answer(2)[:1])
    assert log.has_first(2) and not log.has_first(1)


def test_nothing_is_lost_while_a_monitor_folds_concurrently():
    log = RequestLog()
    n, stop = 20_000, threading.Event()

    def monitor():
        while not stop.is_set():
            log.sync()

    t = threading.Thread(target=monitor)
    t.start()
    try:
        for q in range(n):  # issue, then answer, as the SUT does
            log.on_issue([req(q)])
            log.on_responses(answer(q))
    finally:
        stop.set()
        t.join()
    assert len(log) == n and log.completed == n and log.tokens == 10 * n
    assert len(log.latencies()[0]) == n
