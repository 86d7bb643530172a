"""The triton_grpc core against a real Triton Inference Server (2.51, from nvidia-pytriton,
made runnable by ``make triton``) serving the project's tiny Llama in a Python-backend
model with the TensorRT-LLM backend's tensor interface: Offline and Server through LoadGen,
the tokens LoadGen got against the model's own, several client processes and models per
server, a server killed mid-run; and the core alone against one server: a request's error
fails it alone, a client process killed fails the core, close cancels, end_id."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cores.triton.core import TritonGrpcCore
from cores.triton.stream import BROKEN, FAILED, TritonStream
from llmlib.config.settings import REPO_ROOT, resolve
from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_ports
from llmlib.deploy.triton.repo import generate_triton_config
from llmlib.errors import ConfigError
from llmlib.eval.accuracy import read_accuracy_log
from llmlib.model.tiny_llama_np import TinyLlama
from llmlib.serving.request import LLMRequest
from tests.conftest import TRITON_MARKS, check_worker_clocks, run_harness

pytestmark = TRITON_MARKS
TINY = ["--vocab_size=2048", "--sample_count=24", "--warmup_queries=2"]


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_offline_and_server_through_loadgen_get_the_model_s_tokens(tmp_path, tiny_model, backend):
    if backend == "ray" and not os.environ.get("LLMLIB_REQUIRE_RAY"):
        pytest.importorskip("ray", reason="the ray extra is not installed")
    p, runs = run_harness(
        tmp_path,
        f"--client_backend={backend}",  # ray: the clients are Ray actors on a Ray started here
        "--core_type=triton_grpc",
        "--launch_server=triton",
        f"--server_model={tiny_model}",
        "--triton_num_clients_per_server=3",
        "--triton_num_models_per_server=2",
        "--scenarios=offline,server",
        "--test_mode=AccuracyOnly",
        "--offline_expected_qps=10",
        "--server_target_qps=4",
        *TINY,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    spec = load_benchmark(REPO_ROOT / "configs", "tiny")
    ds = SyntheticDataset(spec, 0, 2048, 24)
    model = TinyLlama(tiny_model)
    want = {
        i: list(model.generate(ds.input_tokens(i), spec.max_new_tokens, spec.eos_id))
        for i in range(24)
    }
    for scenario in ("offline", "server"):
        s, run_dir = runs[(scenario, "accuracy")]
        h = s["harness"]
        assert h["failed"] == 0 and h["completed"] == h["issued"] == 24, h
        got = read_accuracy_log(run_dir / "mlperf_log_accuracy.json")
        assert sorted(got) == list(range(24))
        for i, tokens in got.items():
            assert tokens.tolist() == want[i], (scenario, i)
    s, _ = runs[("server", "accuracy")]
    assert s["harness"]["ttft_ns"]["p50"] > 0  # first tokens came from the stream
    log = next((tmp_path / "logs").glob("*/server.log")).read_text()
    assert "tritonserver" in log.splitlines()[0]
    assert "tensorrt_llm_0" in log and "tensorrt_llm_1" in log  # two models loaded
    where = "3 gRPC stream clients, each in its own process"
    if backend == "ray":
        where = "3 Ray gRPC stream clients (spread: 3 on "
        for scenario in ("offline", "server"):  # the clients' own clocks (one answer, or
            check_worker_clocks(*runs[(scenario, "accuracy")])  # streamed)
    else:
        assert not any("workers' clocks" in n for n in s["notes"])
    assert any(where in n for n in s["notes"]), s["notes"]


def test_a_server_killed_mid_run_fails_every_query_and_the_run_ends(tmp_path, tiny_model):
    repo = tmp_path / "repo"
    generate_triton_config(repo, "python", model_dir=tiny_model)
    http, grpc, metrics = free_ports(3)
    spec = ServerSpec("triton", str(repo), port=http, grpc_port=grpc, metrics_port=metrics)
    server = LaunchedServer(spec, tmp_path / "server.log")
    with server:
        run = subprocess.Popen(
            [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}",
             "--core_type=triton_grpc", f"--triton_server_urls=127.0.0.1:{spec.grpc_port}",
             "--scenarios=server", "--server_target_qps=20", "--min_duration=20000",
             "--triton_clients_in_process=true", "--progress=false", *TINY],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(8)  # start-up, warmup, then queries in flight
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        out, err = run.communicate(timeout=120)  # the run ends: nothing hangs
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "logs").rglob("summary.json")]
    h = summary["harness"]
    assert h["failed"] > 0 and h["completed"] + h["failed"] == h["issued"], h
    assert summary["validity"] == "INVALID"
    assert any("triton 127.0.0.1" in r or "failed" in r for r in summary["reasons"]), summary


# --- the core alone, against one server -------------------------------------------------------
@pytest.fixture(scope="module")
def server_url(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("triton")
    generate_triton_config(tmp / "repo", "python", model_dir=tiny_model)
    http, grpc, metrics = free_ports(3)
    spec = ServerSpec("triton", str(tmp / "repo"), port=http, grpc_port=grpc, metrics_port=metrics)
    with LaunchedServer(spec, tmp / "server.log"):
        yield f"127.0.0.1:{spec.grpc_port}"


class Done:
    """A core's callback: the final responses by request id, and a wait for them."""

    def __init__(self):
        self.final, self.first, self.cv = {}, {}, threading.Condition()

    def __call__(self, responses):
        with self.cv:
            for r in responses:
                (self.final if r.is_final else self.first)[r.request_id] = r
            self.cv.notify_all()

    def wait(self, n, timeout=60.0):
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.final) >= n, timeout), self.final


def core_for(url, done, **flags):
    cfg = resolve({}, benchmark="tiny", scenario="server", env={})
    cfg = cfg.replace(core_type="triton_grpc", triton_server_urls=[url], **flags)
    return TritonGrpcCore(0, cfg, done)


def req(rid, prompt, max_new=6, stream=True):
    tokens = np.asarray(prompt, np.int32)
    return LLMRequest(rid, rid, tokens, max_new, stream, issue_ns=time.perf_counter_ns())


@pytest.mark.parametrize("in_process", [True, False])
def test_a_request_s_error_fails_it_alone(server_url, tiny_model, in_process):
    done = Done()
    core = core_for(server_url, done, triton_num_clients_per_server=2,
                    triton_clients_in_process=in_process, triton_end_id="none")  # fmt: skip
    try:
        core.run_health_check()
        prompts = [[5, 6, 7], [9, 10, 11, 12], [100, 200]]
        core.enqueue([req(0, prompts[0]), req(1, prompts[1], max_new=0), req(2, prompts[2])])
        done.wait(3)
    finally:
        core.close()
    assert "request_output_len must be at least 1" in done.final[1].error
    model = TinyLlama(tiny_model)
    for rid in (0, 2):
        assert done.final[rid].error is None
        want = list(model.generate(np.asarray(prompts[rid]), 6))
        assert done.final[rid].output_tokens.tolist() == want
        assert done.first[rid].output_tokens.tolist() == want[:1]  # streamed first token
    assert core.alive


def test_a_client_process_killed_fails_the_core_and_every_pending_query(server_url):
    done = Done()
    # no end id and long answers: both workers still have work when one is killed (with the
    # benchmark's EOS an answer could end early and leave the killed worker idle)
    core = core_for(server_url, done, triton_num_clients_per_server=2, triton_end_id="none")
    try:
        core.enqueue([req(i, [3 + i, 40, 41], max_new=2000) for i in range(6)])
        time.sleep(1.0)
        assert core._pool is not None
        assert len(done.final) < 6, "every answer ended before the kill: nothing to test"
        core._pool.workers[1][0].kill()
        done.wait(6, timeout=30)
    finally:
        core.close()
    assert not core.alive
    failed = [r for r in done.final.values() if r.error]
    assert failed and all("worker process triton-0-1 exited" in r.error for r in failed)


@pytest.mark.parametrize("in_process", [True, False])
def test_close_cancels_what_is_in_flight(server_url, in_process):
    done = Done()
    # no end id and long answers: with the benchmark's EOS as end id an answer could end
    # before the close (seen once in CI: one of four had), leaving nothing to cancel
    core = core_for(server_url, done, triton_clients_in_process=in_process, triton_end_id="none")
    core.enqueue([req(i, [7, 8, 9 + i], max_new=2000) for i in range(4)])
    time.sleep(1.0)
    assert not done.final, "an answer ended before the close: nothing to test"
    t0 = time.perf_counter()
    core.close()
    assert time.perf_counter() - t0 < 15
    assert len(done.final) == 4 and all(r.error for r in done.final.values())


def test_end_id_stops_the_answer_and_defaults_to_the_benchmark_eos(server_url, tiny_model):
    prompt = [11, 12, 13, 14]
    want = list(TinyLlama(tiny_model).generate(np.asarray(prompt), 6))
    stop_at = want[2]  # the third token as end_id: the answer ends there, end_id included
    cut = want[: want.index(stop_at) + 1]
    for flag, expect in ((str(stop_at), cut), ("none", want)):
        done = Done()
        core = core_for(server_url, done, triton_clients_in_process=True, triton_end_id=flag)
        try:
            core.enqueue([req(0, prompt, stream=False)])
            done.wait(1)
        finally:
            core.close()
        assert done.final[0].output_tokens.tolist() == expect, flag
        assert 0 not in done.first  # not streamed: no first-token response
    core = core_for(server_url, Done(), triton_clients_in_process=True)
    core.close()
    assert core.end_id == load_benchmark(REPO_ROOT / "configs", "tiny").eos_id == 2
    with pytest.raises(ConfigError, match="auto .*none, or a token id"):
        core_for(server_url, Done(), triton_end_id="eos")


def test_responses_that_cannot_be_read_or_name_no_request(server_url):
    """What the stream's reader makes of odd responses (built as the server would send
    them): a response it cannot read fails its request (an exception escaping would end the
    reader and leave every request on the stream waiting); an error with a request id
    fails that request; an error with none, or unreadable with none, breaks the stream."""
    from tritonclient.grpc import service_pb2 as pb

    def response(rid, error="", data=b""):
        r = pb.ModelStreamInferResponse(error_message=error)
        r.infer_response.id = rid
        r.infer_response.parameters["triton_final_response"].bool_param = True
        if data:
            out = r.infer_response.outputs.add()
            out.name, out.datatype = "output_ids", "INT32"
            r.infer_response.raw_output_contents.append(data)
        return r

    events = []
    stream = TritonStream(server_url, -1, events.extend)
    try:
        for rid in (7, 8):
            stream._live[rid] = ([], [True])
        stream._on_response(response("7", data=b"\x01\x02\x03"))  # 3 bytes: no int32s
        stream._on_response(response("8", error="out of KV cache blocks"))
        stream._on_response(response("", error="Stream removed"))
        stream._on_response(response("", data=b"\x01"))
        got = list(events)
    finally:
        stream.close()
    kinds = [(k, rid) for k, rid, _, _ in got]
    assert kinds == [(FAILED, 7), (FAILED, 8), (BROKEN, -1), (BROKEN, -1)], got
    assert "unreadable response" in got[0][2] and "buffer size" in got[0][2]
    assert got[1][2] == "out of KV cache blocks" and got[2][2] == "Stream removed"
    assert not stream._live


def test_the_counting_model_counts_on_from_the_prompt(tmp_path):
    """The benchmark's weightless server model: each token the last plus one (modulo the
    vocabulary), first from the prompt's last; end_id ends it."""
    generate_triton_config(tmp_path / "repo", "counting", vocab_size=50)
    http, grpc, metrics = free_ports(3)
    spec = ServerSpec("triton", str(tmp_path / "repo"), port=http, grpc_port=grpc,
                      metrics_port=metrics)  # fmt: skip
    with LaunchedServer(spec, tmp_path / "server.log"):
        for end_id, want in (("none", [48, 49, 0, 1, 2]), ("0", [48, 49, 0])):
            done = Done()
            core = core_for(f"127.0.0.1:{spec.grpc_port}", done, triton_end_id=end_id)
            try:
                core.enqueue([req(0, [3, 47], max_new=5)])
                done.wait(1)
            finally:
                core.close()
            assert done.final[0].output_tokens.tolist() == want, end_id
            assert done.first[0].output_tokens.tolist() == [48]
