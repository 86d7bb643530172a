"""The triton_grpc core against a real Triton whose Python-backend model misbehaves on every
third request (``llmlib.triton_backend_model``'s faults), through real LoadGen: every query is
completed or counted as failed, the run is INVALID, and it ends in bounded time."""

import csv
import time

import pytest

from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_ports
from llmlib.deploy.triton.repo import generate_triton_config
from tests.conftest import TRITON_MARKS, run_harness

pytestmark = TRITON_MARKS

EXPECT = {
    "error": "injected error",
    "error_after_first": "injected error after the first token",
    "zero_tokens": "the final response came with no tokens",
    "stall": "its answer stopped for over 2 s",
    "silent": "no response for over 2 s",
}


@pytest.mark.parametrize("mode", sorted(EXPECT))
def test_every_query_is_accounted_for_whatever_the_model_does(tmp_path, mode):
    repo = tmp_path / "repo"
    generate_triton_config(repo, "counting", vocab_size=2048, max_concurrency=64,
                           token_interval_ms=2, fault=mode, fault_every=3)  # fmt: skip
    http, grpc, metrics = free_ports(3)
    spec = ServerSpec("triton", str(repo), port=http, grpc_port=grpc, metrics_port=metrics)
    with LaunchedServer(spec, tmp_path / "server.log") as server:
        server.wait_ready(60)
        t0 = time.monotonic()
        p, runs = run_harness(
            tmp_path,
            "--core_type=triton_grpc",
            f"--triton_server_urls=127.0.0.1:{spec.grpc_port}",
            "--triton_end_id=none",
            "--scenarios=server",
            "--server_target_qps=40",
            "--min_duration=2000",
            "--min_query_count=60",
            "--warmup_queries=0",
            "--stall_timeout_s=2",
            timeout=150,
        )
        took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("server", "performance")]
    h = s["harness"]
    rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
    failed = [r for r in rows if r["error"]]
    assert len(rows) == h["issued"] == h["completed"] + h["failed"] > 0
    assert len(failed) == h["failed"] > 0 and h["completed"] > 0
    assert s["validity"] == "INVALID"
    assert any(EXPECT[mode] in r["error"] for r in failed), {r["error"] for r in failed}
    tpot = s["loadgen"]["tpot_ns"]
    assert all(0 <= v < 60e9 for v in tpot.values()), tpot
    assert took < 120
