"""The triton_grpc core against a real Triton Inference Server (2.51, from nvidia-pytriton,
made runnable by ``make triton``) serving the project's tiny Llama in a Python-backend
model with the TensorRT-LLM backend's tensor interface: Offline and Server through LoadGen,
the tokens LoadGen got against the model's own, several clients and models per server, and
a server killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llmlib.accuracy import read_accuracy_log
from llmlib.config import REPO_ROOT
from llmlib.launch import LaunchedServer, ServerSpec, free_port
from llmlib.tiny_llama_np import TinyLlama
from llmlib.triton_repo import generate_triton_config
from llmlib.triton_setup import TritonHome
from llmlib.workloads import SyntheticDataset, load_benchmark

from .test_e2e_dummy import harness

_ready = TritonHome.find().ready()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _ready and not os.environ.get("LLMLIB_REQUIRE_NATIVE"),
        reason="Triton is not prepared (make triton)",
    ),
]
TINY = ["--vocab_size=2048", "--triton_end_id=-1", "--sample_count=24", "--warmup_queries=2"]


def test_offline_and_server_through_loadgen_get_the_model_s_tokens(tmp_path, tiny_model):
    p, runs = harness(
        tmp_path,
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
    want = {i: list(model.generate(ds.input_tokens(i), spec.max_new_tokens)) for i in range(24)}
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


def test_a_server_killed_mid_run_fails_every_query_and_the_run_ends(tmp_path, tiny_model):
    repo = tmp_path / "repo"
    generate_triton_config(repo, "python", model_dir=tiny_model)
    spec = ServerSpec("triton", str(repo), port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port())  # fmt: skip
    server = LaunchedServer(spec, tmp_path / "server.log")
    with server:
        run = subprocess.Popen(
            [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}",
             "--core_type=triton_grpc", f"--triton_server_urls=127.0.0.1:{spec.grpc_port}",
             "--scenarios=server", "--server_target_qps=20", "--min_duration=20000",
             "--progress=false", *TINY],
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
