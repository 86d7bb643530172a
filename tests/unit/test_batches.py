"""Requests issued together travel as RequestBatch columns (the Offline path): the batch
is the same requests the builder makes one by one, cores that do not take columns get
those requests, a pool splits a batch per core, the books (pending, failure, the request
log) hold for batches, and a core answering columns gives LoadGen the same data."""

import ctypes

import numpy as np

from cores.dummy import DummyCore
from harness.run.sut import HarnessSUT
from llmlib.data.benchmarks import RequestBuilder, SyntheticDataset, load_benchmark
from llmlib.serving.core import CoreCapabilities, LLMCore
from llmlib.serving.policies import make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request import LLMRequest, LLMResponse, RequestBatch, ResponseBatch
from llmlib.serving.request_log import RequestLog
from tests.conftest import Collector, Q, RecordingSink, make_cfg


def dataset(n=64):
    cfg = make_cfg()
    return SyntheticDataset(load_benchmark(cfg.config_dir, "tiny"), 0, 2048, n)


class Recorder(LLMCore):
    """Keeps what ``_enqueue_impl`` was given; answers nothing by itself."""

    name = "recorder"

    def __init__(self, core_id, batches):
        super().__init__(core_id, None)
        self.capabilities = CoreCapabilities(batches=batches)
        self.got = []

    def _enqueue_impl(self, requests):
        self.got.append(requests)


def same_request(a: LLMRequest, b: LLMRequest) -> bool:
    fields = ("request_id", "sample_index", "max_new_tokens", "stream", "output_len", "issue_ns")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and (
        a.input_tokens is b.input_tokens and a.reference_tokens is b.reference_tokens
    )


def test_a_batch_is_the_sequence_of_requests_the_builder_makes():
    b = RequestBuilder(dataset(), False)
    batch = b.batch_from_queries([Q(100 + k, (7 * k) % 64) for k in range(10)], 123)
    assert batch.request_ids == list(range(100, 110)) and batch.issue_ns == 123
    assert len(batch) == 10
    singles = [b.one(100 + k, (7 * k) % 64, 123) for k in range(10)]
    assert all(same_request(x, y) for x, y in zip(batch, singles, strict=True))
    assert all(same_request(batch[k], singles[k]) for k in (0, 9, -1))
    assert all(same_request(x, y) for x, y in zip(batch.requests(), singles, strict=True))
    part = batch[2:8:3]
    assert isinstance(part, RequestBatch) and part.request_ids == [102, 105]
    assert part.sample_indices == [14, 35]
    assert batch.subset([9, 0]).request_ids == [109, 100]


def test_a_core_that_does_not_take_columns_gets_llm_requests():
    core = Recorder(0, batches=False)
    batch = RequestBuilder(dataset(), False).batch_from_queries([Q(1, 1), Q(2, 2)], 5)
    core.enqueue(batch)
    (got,) = core.got
    assert type(got) is list and [r.request_id for r in got] == [1, 2]
    assert all(type(r) is LLMRequest for r in got)
    assert core.pending == 2


def test_the_pool_splits_a_batch_into_one_batch_per_core():
    cores = [Recorder(i, batches=True) for i in range(3)]
    server = LLMServer(cores, make_policy("round_robin", 3))
    batch = RequestBuilder(dataset(), False).batch_from_queries([Q(q, q) for q in range(10)], 5)
    server.issue(batch)
    for i, core in enumerate(cores):
        (got,) = core.got
        assert type(got) is RequestBatch
        assert got.request_ids == list(range(i, 10, 3)) == got.sample_indices
        assert got.issue_ns == 5 and core.pending == len(got)
    assert server.issued == [4, 3, 3]
    least = LLMServer([Recorder(i, True) for i in range(2)], make_policy("least_pending", 2))
    least.issue(batch)
    assert sorted(q for c in least.cores for q in c.got[0].request_ids) == list(range(10))


def test_a_batch_answer_goes_on_only_for_requests_still_pending():
    core, seen = Recorder(0, batches=True), Collector()
    core.callback = seen
    batch = RequestBuilder(dataset(), False).batch_from_queries([Q(q, q) for q in range(5)], 5)
    core.enqueue(batch)
    core._fail_ids([1, 3], "lost")  # say, a failure raced the backend's answer
    outs = [np.arange(q + 1, dtype=np.uint32) for q in range(5)]
    core._deliver_batch(ResponseBatch(list(range(5)), outs, 9, 0))
    finals = seen.finals()
    assert sorted(finals) == [0, 1, 2, 3, 4]
    assert finals[1].error == finals[3].error == "lost"
    assert [len(finals[q].output_tokens) for q in (0, 2, 4)] == [1, 3, 5]
    assert core.pending == 0
    assert core.telemetry.completed == 3 and core.telemetry.failed == 2
    assert core.telemetry.tokens == 9
    core._deliver_batch(ResponseBatch([0], [outs[0]], 10, 0))  # twice: not forwarded again
    assert len(seen.responses) == 5


def test_closing_a_core_fails_every_request_of_a_pending_batch():
    core, seen = Recorder(0, batches=True), Collector()
    core.callback = seen
    core.enqueue(RequestBuilder(dataset(), False).batch_from_queries([Q(7, 1), Q(8, 2)], 5))
    core.close()
    finals = seen.finals()
    assert sorted(finals) == [7, 8] and all(r.error for r in finals.values())
    core._fail("dead")  # nothing pending: nothing more
    assert len(seen.responses) == 2


def _sut(ds, dtype=np.uint32):
    cfg = make_cfg(engine_profile="zero")
    server = LLMServer([DummyCore(0, cfg)], make_policy("round_robin", 1))
    sink, log = RecordingSink(), RequestLog()
    return HarnessSUT(server, ds, sink, False, log, dtype), sink, log


def test_offline_batch_answers_equal_one_by_one_answers():
    ds = dataset()
    queries = [Q(1000 + k, (5 * k) % 64) for k in range(300)]
    batched, bsink, blog = _sut(ds)
    batched.issue_queries(queries)  # many at once: RequestBatch -> ResponseBatch
    single, ssink, slog = _sut(ds)
    for q in queries:
        single.issue_queries([q])  # one at a time: LLMRequest -> LLMResponse
    assert bsink.events("final") == ssink.events("final")
    assert len(bsink.events("final")) == 300
    for name in ("qid", "sample", "n_tokens", "error"):
        assert blog.column(name) == slog.column(name)
    assert blog.completed == 300 and blog.tokens == slog.tokens > 0


def _read(items, dtype):
    return {
        q: np.frombuffer(ctypes.string_at(p, nb) if nb else b"", dtype=dtype).tolist()
        for q, p, nb, n in items
        if n == nb // np.dtype(dtype).itemsize
    }


class Capture:
    def __init__(self, dtype):
        self.dtype, self.finals = dtype, {}

    def query_samples_complete(self, items):
        self.finals.update(_read(items, self.dtype))

    def first_token_complete(self, items):
        raise AssertionError("a ResponseBatch has no first tokens")


def test_a_response_batch_of_any_token_container_reaches_loadgen_intact():
    outs = [
        [5, 6, 7],  # a list
        np.arange(20, dtype=np.uint32)[::3],  # not contiguous
        np.array([9, 10], dtype=np.int64),  # wider than the output dtype
        np.array([], dtype=np.uint32),  # empty
        np.array([11, 12, 13, 14], dtype=np.uint32),
    ]
    for dtype in (np.uint32, np.int32, np.int64):
        sut, _, _ = _sut(dataset(), dtype)
        sut.sink = Capture(dtype)
        sut.complete(ResponseBatch([1, 2, 3, 4, 5], outs, 0, 0))
        assert sut.sink.finals == {q + 1: list(map(int, o)) for q, o in enumerate(outs)}


def test_the_request_log_folds_batches_and_single_requests_alike():
    ds = dataset()
    b = RequestBuilder(ds, False)
    log = RequestLog()
    log.on_issue(b.batch_from_queries([Q(1, 4), Q(2, 5)], 100))
    log.on_issue([b.one(3, 6, 200)])
    log.on_responses(ResponseBatch([2, 1], [np.arange(4), np.arange(2)], 300, 1))
    log.on_responses([LLMResponse(3, [], True, 400, 0, "boom")])
    assert log.column("qid") == [1, 2, 3] and log.column("sample") == [4, 5, 6]
    assert log.column("issue_ns") == [100, 100, 200]
    assert log.column("final_ns") == [300, 300, 400]
    assert log.column("n_tokens") == [2, 4, 0] and log.column("core") == [1, 1, 0]
    assert log.completed == 2 and log.failed == 1 and log.tokens == 6


class Raiser(Recorder):
    def _enqueue_impl(self, requests):
        raise RuntimeError("backend refused")


def test_a_batch_to_a_dead_or_refusing_core_fails_every_request():
    b = RequestBuilder(dataset(), False)
    for core, why in ((Recorder(0, batches=True), "is down"), (Raiser(0, True), "refused")):
        seen = Collector()
        core.callback = seen
        if why == "is down":
            core._fail("gone")
        core.enqueue(b.batch_from_queries([Q(q, q) for q in range(4)], 5))
        finals = seen.finals()
        assert sorted(finals) == [0, 1, 2, 3] and core.pending == 0
        assert all(why in r.error for r in finals.values())
