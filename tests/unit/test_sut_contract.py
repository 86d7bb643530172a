"""The token-latency contract on the way to LoadGen (TEST06's checks), with a recording
sink in place of LoadGen and real dummy cores behind a real LLMServer."""

import csv

import numpy as np

from cores.dummy import DummyCore
from harness.run.sut import HarnessSUT
from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
from llmlib.serving.policies import make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request import LLMResponse, failed_response
from llmlib.serving.request_log import RequestLog
from tests.conftest import Q, RecordingSink, make_cfg

EOS = 2


def setup(stream, cores=2, clock=None, **cfg_kw):
    cfg = make_cfg(**cfg_kw)
    ds = SyntheticDataset(load_benchmark(cfg.config_dir, "tiny"), 0, 2048, 64)
    cs = [DummyCore(i, cfg, clock=clock) for i in range(cores)]
    server = LLMServer(cs, make_policy("round_robin", cores))
    sink, log = RecordingSink(), RequestLog()
    return HarnessSUT(server, ds, sink, stream, log), server, sink, log, ds


def check_test06(sink, ds, qids):
    firsts, finals = sink.events("first"), sink.events("final")
    assert set(finals) == set(qids)
    for q in qids:
        toks, n = finals[q]
        assert n == len(toks)  # n_tokens equals the data length
        assert toks[: len(firsts[q][0])] == firsts[q][0]  # final starts with the first data
        assert toks[:-1].count(EOS) == 0  # at most one EOS, and only at the end
    order = [(k, q) for k, items in sink.calls for q, _, _ in items]
    for q in qids:
        assert order.index(("first", q)) < order.index(("final", q))


def test_streamed_queries_meet_the_token_latency_contract():
    sut, server, sink, log, ds = setup(True, engine_flags={"kind": "batching"})
    qids = list(range(100, 140))
    sut.issue_queries([Q(q, q % len(ds)) for q in qids])
    assert server.flush(10)
    server.close()
    check_test06(sink, ds, qids)
    assert log.completed == 40 and log.failed == 0
    assert sum(n for _, n in sink.events("final").values()) == log.tokens


def test_output_length_is_the_samples_reference_length():
    sut, server, sink, log, ds = setup(False, engine_profile="zero")
    sut.issue_queries([Q(q, q) for q in range(10)])
    for q in range(10):
        assert sink.events("final")[q][1] == ds.output_len(q)
    assert sink.events("first") == {}


def test_completions_ready_together_go_to_loadgen_in_one_call():
    sut, server, sink, log, ds = setup(False, cores=1, engine_profile="zero")
    sut.issue_queries([Q(q, q) for q in range(50)])
    assert [k for k, _ in sink.calls] == ["final"]
    assert len(sink.calls[0][1]) == 50


def test_failed_queries_complete_with_a_first_token_and_are_counted():
    sut, server, sink, log, ds = setup(True, cores=1, engine_profile="zero", dummy_fail_after=5)
    sut.issue_queries([Q(q, q) for q in range(3)])
    sut.issue_queries([Q(q, q) for q in range(3, 8)])  # the core dies here
    sut.issue_queries([Q(8, 8)])
    finals, firsts = sink.events("final"), sink.events("first")
    assert set(finals) == set(range(9)) and set(firsts) == set(range(9))
    for q in range(3, 9):  # no data; 2 tokens, so LoadGen's TPOT is not negative
        assert finals[q] == ([], 2)
    assert log.completed == 3 and log.failed == 6
    assert "injected failure" in log.column("error")[3]


def test_a_request_failing_after_its_first_token_completes_with_what_it_received(tmp_path):
    sut, server, sink, log, ds = setup(True, cores=1, engine_profile="zero")
    reqs = [sut.builder.one(q, q, 1) for q in range(4)]
    log.on_issue(reqs)
    sut.complete([LLMResponse(q, np.array([7], np.uint32), False, 5) for q in (0, 1)])
    part = np.array([7, 8, 9], np.uint32)
    sut.complete([
        failed_response(0, "stream cut", 9, 0, part),  # three tokens had arrived
        failed_response(1, "stream cut", 9, 0),  # only the first token had
        failed_response(2, "refused", 9, 0),  # nothing had
        LLMResponse(3, part, True, 9),
    ])  # fmt: skip
    finals, firsts = sink.events("final"), sink.events("first")
    assert finals[0] == ([7, 8, 9], 3)
    assert finals[1] == ([], 2) and finals[2] == ([], 2) and finals[3] == ([7, 8, 9], 3)
    assert firsts[2] == ([], 0)  # an empty first token at the failure
    assert log.failed == 3 and log.completed == 1
    assert log.failed_after_first_token() == 2
    log.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text().splitlines()))
    assert [r["tokens_before_failure"] for r in rows] == ["3", "0", "0", ""]


def test_a_failed_request_in_offline_completes_with_no_tokens():
    sut, server, sink, log, ds = setup(False, cores=1, engine_profile="zero")
    log.on_issue([sut.builder.one(0, 0, 1)])
    sut.complete([failed_response(0, "refused", 9, 0)])
    assert sink.events("final")[0] == ([], 0) and not sink.events("first")


def test_int32_output_for_accuracy_checkers_that_want_it():
    sut, server, sink, log, ds = setup(False, cores=1, engine_profile="zero")
    sut.dtype = np.dtype(np.int32)
    sut.issue_queries([Q(1, 1)])
    assert sink.events("final")[1][1] == ds.output_len(1)


def test_offline_issue_larger_than_a_chunk_completes_every_query_once():
    from harness.run.sut import ISSUE_CHUNK

    sut, server, sink, log, ds = setup(False, cores=2, engine_profile="zero")
    n = 2 * ISSUE_CHUNK + 77
    sut.issue_queries([Q(q, q % len(ds)) for q in range(n)])
    finals = [q for k, items in sink.calls if k == "final" for q, _, _ in items]
    assert sorted(finals) == list(range(n))  # each exactly once
    assert len(sink.calls) >= 3  # handed over chunk by chunk, not all at the end
    for q, (toks, n_tok) in sink.events("final").items():
        assert n_tok == len(toks) == ds.output_len(q % len(ds))
    assert log.completed == n and sum(server.issued) == n


def test_request_builder_single_and_batch_agree():
    from llmlib.data.benchmarks import RequestBuilder

    _, _, _, _, ds = setup(True)
    b = RequestBuilder(ds, True)
    one = b.one(42, 3, 7)
    (many,) = b.build([42], [3], 7)
    for f in ("request_id", "sample_index", "max_new_tokens", "stream", "output_len", "issue_ns"):
        assert getattr(one, f) == getattr(many, f)
    assert np.array_equal(one.input_tokens, ds.input_tokens(3))
    assert np.array_equal(many.input_tokens, ds.input_tokens(3))
    assert one.output_len == ds.output_len(3) and one.stream and one.issue_ns == 7
