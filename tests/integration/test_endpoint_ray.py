"""The openai core's client workers as Ray actors (``--client_backend=ray``) against llmlib's
serving front on 127.0.0.1: on a Ray the harness starts here, and on a cluster of two nodes
(``ray start``: a head with no CPU and a worker node that alone offers the workers' custom
resource) whose worker node is killed mid-run. LoadGen gets the server's token ids; the
report says where the workers ran and what the hop to the driver cost; a lost node fails
what it held, the run ends and nothing is left running; bad settings are one line, exit 2,
before any test starts."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from llmlib.deploy.launch import free_port
from tests.conftest import check_worker_clocks, run_harness
from tests.integration.test_endpoint import Front, endpoint_args, server_run

pytestmark = pytest.mark.slow

if os.environ.get("LLMLIB_REQUIRE_RAY"):
    import ray  # noqa: F401  (CI installs the ray extra: a missing Ray fails here)
else:
    pytest.importorskip("ray", reason="the ray extra is not installed")

RAY = ("--client_backend=ray", "--workers_per_core=2")


def ray_processes() -> list[str]:
    import psutil

    names = ("raylet", "gcs_server", "ray::")
    lines = [" ".join(p.info["cmdline"] or [p.info["name"] or ""])
             for p in psutil.process_iter(["name", "cmdline"])]  # fmt: skip
    return [x[:80] for x in lines if any(n in x for n in names)]


def test_workers_on_a_ray_started_here_give_loadgen_the_servers_ids(tmp_path):
    f = Front()
    try:
        p, runs = run_harness(tmp_path, *endpoint_args(f.url, *RAY), "--scenarios=server",
                              "--test_mode=AccuracyOnly")  # fmt: skip
        assert p.returncode == 0, p.stderr
        s, run_dir = runs[("server", "accuracy")]
        assert s["harness"]["failed"] == 0
        (line,) = [n for n in s["notes"] if "Ray client workers" in n]
        assert line.startswith("core 0: 2 Ray client workers (spread: 2 on "), line
        check_worker_clocks(s, run_dir)
        logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
        from harness.run.prepare import build_dataset
        from llmlib.config.settings import resolve
        from llmlib.data.benchmarks import load_benchmark

        cfg = resolve({}, benchmark="tiny", scenario="server", env={})
        spec = load_benchmark(cfg.config_dir, "tiny")
        ds = build_dataset(cfg, spec)
        for e in logged[:5]:
            i = e["qsl_idx"]
            body = {"prompt": ds.input_tokens(i).tolist(), "max_tokens": spec.max_new_tokens,
                    "return_token_ids": True, "stream": False}  # fmt: skip
            want = f.post("/v1/completions", body)["choices"][0]["token_ids"]
            got = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32).tolist()
            assert got == want and len(got) > 1
    finally:
        f.stop()
    for _ in range(40):  # the Ray the run started ends with it
        if not ray_processes():
            break
        time.sleep(0.5)
    assert not ray_processes()


@pytest.mark.parametrize(
    "flags, says",
    [
        (("--client_backend=ray",), "--client_backend=ray runs the workers as Ray actors"),
        ((*RAY, "--ray_address=nohostport"), "not host:port, ray://host:port or auto"),
        ((*RAY, "--ray_address=127.0.0.1:PORT"), "no Ray cluster at 127.0.0.1:"),
        ((*RAY, "--ray_placement=diagonal"), "ray_placement"),
        ((*RAY, "--ray_worker_resource=clients"), "--ray_worker_resource places workers"),
    ],
)  # fmt: skip
def test_bad_ray_settings_are_one_line_and_exit_2(tmp_path, flags, says):
    flags = [x.replace("PORT", str(free_port())) for x in flags]  # nothing listens there
    p, runs = run_harness(tmp_path, *endpoint_args("http://127.0.0.1:9", *flags),
                          "--scenarios=server")  # fmt: skip
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert says in p.stderr, p.stderr
    assert not runs  # no test started
    assert not ray_processes()


def test_a_cluster_of_two_nodes_and_its_worker_node_killed(tmp_path, monkeypatch):
    import psutil

    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert ray_cli, "the ray extra installs the ray command"
    port = free_port()
    addr = f"127.0.0.1:{port}"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # (a cluster made here, on 127.0.0.1)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [ray_cli, "start", "--disable-usage-stats"]
    run = subprocess.run
    f = Front()
    try:
        p = run([*start, "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false"],
                env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert p.returncode == 0, p.stderr
        head = {q.pid for q in psutil.process_iter(["name"]) if q.info["name"] == "raylet"}
        p = run([*start, f"--address={addr}", "--num-cpus=4", '--resources={"clients": 2}'],
                env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert p.returncode == 0, p.stderr
        node = [q for q in psutil.process_iter(["name"])
                if q.info["name"] == "raylet" and q.pid not in head]  # fmt: skip
        assert len(node) == 1
        on_node = (*RAY, f"--ray_address={addr}", "--ray_worker_resource=clients")
        # 3 workers where the cluster offers 2 units: one line, exit 2, before any test
        p, runs = run_harness(tmp_path / "big", *endpoint_args(f.url, *on_node),
                              "--workers_per_core=3", "--scenarios=server")  # fmt: skip
        assert p.returncode == 2 and not runs, p.stderr[-2000:]
        assert "has 2 clients in all; 3 client workers take one each" in p.stderr, p.stderr
        p, s, _, _ = server_run(tmp_path / "ok", f.url, *on_node, duration_ms=3000)
        assert p.returncode == 0 and s["validity"] == "VALID", (p.stderr[-2000:], s["reasons"])
        assert any("2 Ray client workers" in n for n in s["notes"]), s["notes"]

        def kill_node():  # the worker node and everything under it, 12 s into the run
            time.sleep(12)
            for ch in node[0].children(recursive=True):
                ch.kill()
            node[0].kill()

        import threading

        killer = threading.Thread(target=kill_node)
        killer.start()
        p, s, _, took = server_run(tmp_path / "killed", f.url, *on_node, "--endpoint_timeout_s=5",
                                   duration_ms=30000)  # fmt: skip
        killer.join()
        h = s["harness"]
        assert h["completed"] > 0 and h["failed"] > 0, h
        assert h["completed"] + h["failed"] == h["issued"]  # every query accounted for
        assert s["validity"] == "INVALID" and took < 120
        (down,) = s["core_health"]  # the core went down once, saying which worker and why
        assert down["event"] == "down" and "Ray client worker endpoint-0-" in down["reason"]
        assert " lost (" in down["reason"], down
    finally:
        f.stop()
        run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_triton_clients_in_process_cannot_be_ray_actors(tmp_path):
    pytest.importorskip("tritonclient", reason="tritonclient is not installed (make triton)")
    p, runs = run_harness(tmp_path, "--core_type=triton_grpc", "--triton_server_urls=127.0.0.1:9",
                          "--client_backend=ray", "--triton_clients_in_process=true",
                          "--scenarios=server")  # fmt: skip
    assert p.returncode == 2 and not runs, p.stderr[-2000:]
    assert "give clients out of the process (not --triton_clients_in_process)" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
