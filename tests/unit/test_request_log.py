"""RequestLog: the request path appends, a monitor folds; nothing may be lost in between;
finished blocks spill to Parquet and leave memory."""

import threading
import time

import numpy as np
import pyarrow.parquet as pq

from harness.run.progress import Progress
from llmlib.serving import request_log
from llmlib.serving.request import LLMRequest, LLMResponse, failed_response
from llmlib.serving.request_log import RequestLog

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


# --- blocks: sealed when every request in them is final, spilled as Parquet -------------------
def blocks_of_4(monkeypatch):
    monkeypatch.setattr(request_log, "BLOCK_ROWS", 4)


def read_parts(d):
    parts = sorted(d.glob("part-*.parquet"))
    return pq.read_table(parts).to_pydict() if parts else {}


def test_a_block_is_spilled_once_its_last_request_is_final(tmp_path, monkeypatch):
    blocks_of_4(monkeypatch)
    log = RequestLog(spill_dir=tmp_path / "requests")
    log.on_issue([req(q) for q in range(6)])
    log.on_responses(answer(0) + answer(2) + answer(3) + answer(4))
    log.sync()
    log.drain()
    assert not list((tmp_path / "requests").glob("*.parquet"))  # request 1 is still open
    log.on_responses(answer(1))
    log.sync()
    log.drain()  # (the writer thread writes it)
    assert [p.name for p in (tmp_path / "requests").glob("*.parquet")] == ["part-000000.parquet"]
    assert sorted(log._blocks) == [1]  # the sealed block left memory
    assert read_parts(tmp_path / "requests")["qid"] == [0, 1, 2, 3]
    # reading spans the spilled block and the one in memory, in issue order
    assert log.column("qid") == list(range(6))
    assert log.column("final_ns") == [11_000] * 5 + [0]
    assert log.completed == 5 and len(log.latencies()[0]) == 5


def test_finish_writes_the_whole_log_and_ignores_what_comes_later(tmp_path, monkeypatch):
    blocks_of_4(monkeypatch)
    log = RequestLog(spill_dir=tmp_path / "requests")
    log.on_issue([req(q) for q in range(7)])
    log.on_responses(answer(0) + [failed_response(5, "server gone", 9_000, 1, TOK[:3])])
    log.on_responses(answer(6)[:1])  # 6: a first token, then nothing
    log.finish()
    log.on_responses(answer(1))
    rows = read_parts(tmp_path / "requests")
    assert rows["qid"] == list(range(7))
    assert rows["final_ns"] == [11_000, 0, 0, 0, 0, 9_000, 0]
    assert rows["first_ns"][6] == 2_000
    assert rows["error"] == [""] * 5 + ["server gone", ""]
    assert rows["tokens_before_failure"] == [0] * 5 + [3, 0]
    assert log.completed == 1 and log.failed == 1
    counts = log.write_csv(tmp_path / "requests.csv")
    assert counts == {"issued": 7, "completed": 1, "failed": 1}
    # after finish (an interrupted run: the pool fails what is open, its blocks on disk)
    assert log.has_first(6) and not log.has_first(2) and not log.has_first(0)


def test_a_run_of_any_length_holds_only_the_blocks_in_flight(tmp_path, monkeypatch):
    """Server-like traffic, each answer a few requests after its issue: memory holds at
    most two blocks however long the run; nothing is lost across 100 spills."""
    blocks_of_4(monkeypatch)
    log = RequestLog(spill_dir=tmp_path / "requests")
    most = 0
    for q in range(400):
        log.on_issue([req(q, issue_ns=1_000 + q)])
        if q >= 3:
            log.on_responses(answer(q - 3, 2_000 + q, 11_000 + q))
        log.sync()
        log.drain()
        most = max(most, len(log._blocks))
    assert most <= 2
    assert len(list((tmp_path / "requests").glob("*.parquet"))) == 99
    ttft, tpot = log.recent_latencies(window=5)
    assert len(ttft) == 5  # from the blocks still in memory, after the spills
    t = log.table()
    assert t["qid"].tolist() == list(range(400)) and log.completed == 397
    assert (t["first_ns"][:397] - t["issue_ns"][:397] == 1_000 + 3).all()


def test_without_a_spill_dir_everything_stays_in_memory(monkeypatch):
    blocks_of_4(monkeypatch)
    log = RequestLog()
    log.on_issue([req(q) for q in range(9)])
    for q in range(9):
        log.on_responses(answer(q))
    log.finish()
    assert sorted(log._blocks) == [0, 1, 2] and log.column("qid") == list(range(9))


def test_the_progress_thread_folds_the_log_with_the_bar_off():
    log = RequestLog()
    with Progress(log, "x", interval_s=0.05, enabled=False):
        log.on_issue([req(1)])
        log.on_responses(answer(1))
        deadline = time.monotonic() + 10
        while (log._issued or log._responses) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not log._issued and not log._responses and log._completed == 1


def test_blocks_are_written_on_the_writer_thread_and_a_failed_write_loses_nothing(
    tmp_path, monkeypatch
):
    """A fold may run on the request path (has_first, on a failure): it never writes. A
    block whose write fails (a full disk) stays in memory and is reported."""
    blocks_of_4(monkeypatch)
    threads, real = [], request_log.write_part

    def write_part(columns, path):
        threads.append(threading.current_thread().name)
        if path.name == "part-000000.parquet":
            raise OSError(28, "No space left on device")
        real(columns, path)

    monkeypatch.setattr(request_log, "write_part", write_part)
    log = RequestLog(spill_dir=tmp_path / "requests")
    log.on_issue([req(q) for q in range(9)])
    for q in range(9):
        log.on_responses(answer(q))
    assert not log.has_first(3)  # (a fold on this thread: blocks 0 and 1 sealed)
    log.finish()
    # block 0 was tried when sealed and again at finish (the disk may have room by then)
    assert set(threads) == {"request-log-writer"} and len(threads) == 4
    assert len(log.spill_errors) == 2 and "No space left" in log.spill_errors[0]
    assert sorted(log._blocks) == [0]  # kept
    assert log.column("qid") == list(range(9)) and log.completed == 9
    assert read_parts(tmp_path / "requests")["qid"] == list(range(4, 9))
