"""Launch ops: commands per server kind, readiness with early exit noticed, stop; and the
bench's histogram quantile."""

import sys

import pytest

from harness.bench.endpoint import histogram_quantile
from llmlib.deploy.launch import (
    LaunchedServer,
    ServerSpec,
    free_port,
    free_ports,
    parse_server_args,
)
from llmlib.errors import BackendError, ConfigError, HealthCheckError


def test_commands_per_kind_bind_the_host_and_port():
    vllm = ServerSpec("vllm", "m", port=8100, args=["--dtype", "float32"]).command()
    assert vllm[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm[3:] == [
        "--model",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "8100",
        "--dtype",
        "float32",
    ]
    assert ServerSpec("trtllm", "/ckpt", port=1).command()[:2] == ["trtllm-serve", "/ckpt"]
    llama = ServerSpec("llamacpp", "t.gguf").command()
    assert llama[0].endswith("llama-server") and llama[1:3] == ["-m", "t.gguf"]
    front = ServerSpec("llmlib", port=9).command()
    assert front[1:4] == ["-m", "harness", "serve"] and "--port" in front
    assert ServerSpec("vllm", "m").url == "http://127.0.0.1:8000"


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match="needs a model"):
        ServerSpec("vllm").command()
    with pytest.raises(ConfigError, match="one of vllm, trtllm"):
        ServerSpec("tgi", "m").command()
    with pytest.raises(ConfigError, match="--server_args"):
        parse_server_args('--x "unclosed')
    assert parse_server_args("--dtype float32 --name 'a b'") == [
        "--dtype",
        "float32",
        "--name",
        "a b",
    ]


def test_a_program_not_installed_shows_the_command_to_run_elsewhere(tmp_path):
    srv = LaunchedServer(ServerSpec("trtllm", "/models/llama", port=8123), tmp_path / "s.log")
    with pytest.raises(BackendError, match="trtllm-serve /models/llama --host 127.0.0.1"):
        srv.start()


def test_a_server_that_exits_before_ready_is_reported_with_its_log(tmp_path):
    spec = ServerSpec("llmlib", port=free_port(), args=["--core_type=nope"])
    srv = LaunchedServer(spec, tmp_path / "s.log").start()
    with pytest.raises(HealthCheckError, match="exited .* before it was ready"):
        srv.wait_ready(60)
    srv.stop()
    assert "$ " in (tmp_path / "s.log").read_text()  # the command heads the log


def test_the_serving_front_launches_answers_health_and_stops(tmp_path):
    spec = ServerSpec("llmlib", port=free_port(), args=["--engine_profile=zero"])
    with LaunchedServer(spec, tmp_path / "s.log") as srv:
        assert srv.proc.poll() is None
    assert srv.proc.poll() is not None


def test_histogram_quantile_interpolates_within_the_bucket():
    b = {0.1: 10.0, 0.2: 30.0, 0.5: 40.0, float("inf"): 40.0}
    assert histogram_quantile(0.25, b) == pytest.approx(0.1)
    assert histogram_quantile(0.5, b) == pytest.approx(0.15)
    assert histogram_quantile(1.0, b) == pytest.approx(0.5)


def test_free_ports_are_distinct_and_free():
    import socket

    ports = free_ports(64)
    assert len(set(ports)) == 64
    socks = [socket.socket() for _ in ports]
    try:
        for s, p in zip(socks, ports, strict=True):
            s.bind(("127.0.0.1", p))  # all of them at once: none taken, none twice
    finally:
        for s in socks:
            s.close()
