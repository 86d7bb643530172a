"""``harness simulate --sweep`` on a real Ray: started here, and a cluster of two nodes
(a head and a worker node, ``ray start``) whose worker node is killed mid-sweep. The results
are the in-process backend's; a run that raises or whose worker dies is reported, the others
kept; nothing is left running or waiting."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import harness.tools.sweep as sweep_mod
from harness.tools.simulate import main

pytestmark = pytest.mark.slow

if os.environ.get("LLMLIB_REQUIRE_RAY"):
    import ray  # noqa: F401  (CI installs the ray extra: a missing Ray fails here)
else:
    pytest.importorskip("ray", reason="the ray extra is not installed")

GRID = ["--sweep", "--engines=cpu-tiny:4:0.5;cpu-tiny:2:0.5", "--policy=round_robin,least_pending",
        "--rate=40,80", "--seed=0,1", "--requests=300"]  # fmt: skip


def results(path):
    doc = json.loads((path / "sweep.json").read_text())
    return doc, {
        (r["fleet"], r["policy"], r["rate"], r["seed"]): (
            r.get("error") or {k: v for k, v in r["summary"].items() if k != "simulated_in_s"}
        )
        for r in doc["runs"]
    }


def raylets() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if "raylet" in (p.info["name"] or "")]  # fmt: skip


def test_ray_started_here_gives_the_process_backend_s_results(tmp_path, monkeypatch):
    import ray

    assert main([*GRID, "--sweep_backend=process", f"--out={tmp_path / 'p'}"]) == 0
    _, want = results(tmp_path / "p")
    real = sweep_mod.run_point

    def flaky(args, point):  # (pickled by value: it runs in Ray's workers)
        if point.rate == 80.0 and point.seed == 1 and point.policy == "round_robin":
            raise ValueError("injected")
        if point.rate == 80.0 and point.seed == 1 and point.policy == "least_pending":
            os._exit(3)  # the worker dies
        return real(args, point)

    monkeypatch.setattr(sweep_mod, "run_point", flaky)
    t0 = time.monotonic()
    assert main([*GRID, "--ray_cpus=2", f"--out={tmp_path / 'r'}"]) == 1
    doc, got = results(tmp_path / "r")
    assert doc["backend"] == "ray" and doc["points"] == 16 and doc["failed"] == 4
    for key, res in got.items():
        if key[2:] == (80.0, 1):
            assert isinstance(res, str) and res.startswith(
                "ValueError: injected" if key[1] == "round_robin" else "WorkerCrashedError"
            ), (key, res)
        else:
            assert res == want[key], key
    assert time.monotonic() - t0 < 120
    assert not ray.is_initialized()
    for _ in range(40):  # Ray's processes end with the sweep
        if not raylets():
            break
        time.sleep(0.5)
    assert not raylets()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_cluster_of_two_nodes_and_its_worker_node_killed(tmp_path, monkeypatch):
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert ray_cli, "the ray extra installs the ray command"
    port = free_port()
    addr = f"127.0.0.1:{port}"
    # (Ray's token authentication off: a cluster made for the test, on 127.0.0.1 only)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [ray_cli, "start", "--disable-usage-stats"]
    run = subprocess.run
    try:
        # the head runs no tasks (no CPU): every run goes to the worker node
        p = run([*start, "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false"],
                env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert p.returncode == 0, p.stderr
        head = set(raylets())
        p = run([*start, f"--address={addr}", "--num-cpus=2"], env=env,
                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert p.returncode == 0, p.stderr
        worker = set(raylets()) - head
        assert len(worker) == 1
        assert main([*GRID, f"--ray_address={addr}", f"--out={tmp_path / 'c'}"]) == 0
        assert main([*GRID, "--sweep_backend=process", f"--out={tmp_path / 'p'}"]) == 0
        assert results(tmp_path / "c")[1] == results(tmp_path / "p")[1]
        # a longer sweep (40 runs of 2-3 s each here, on the node's 2 CPUs), and the worker
        # node killed 12 s in: the runs it held and those still queued (no node with a CPU
        # is left) fail; the command ends
        cmd = [sys.executable, "-m", "harness", "simulate", "--sweep", f"--ray_address={addr}",
               "--engines=cpu-tiny:4:0.5", "--policy=least_pending", "--rate=50",
               "--seed=" + ",".join(map(str, range(40))), "--requests=100000",
               f"--out={tmp_path / 'k'}"]  # fmt: skip
        sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)  # fmt: skip
        time.sleep(12)
        import psutil

        for pid in worker:
            node = psutil.Process(pid)
            for ch in node.children(recursive=True):
                ch.kill()
            node.kill()
        out, err = sweep.communicate(timeout=180)
        assert sweep.returncode == 1, err
        doc = json.loads((tmp_path / "k" / "sweep.json").read_text())
        why = [r["error"] for r in doc["runs"] if "error" in r]
        assert doc["points"] == 40 and doc["failed"] == len(why) >= 1, why
        assert all(("summary" in r) != ("error" in r) for r in doc["runs"])
    finally:
        run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_an_address_where_no_ray_cluster_answers_is_one_line(tmp_path):
    listener = socket.socket()  # something listens there, and it is not Ray
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        for addr, wait, msg in (
            (f"127.0.0.1:{listener.getsockname()[1]}", "3", "none answered within 3 s"),
            (f"127.0.0.1:{free_port()}", "30", "Connection refused"),
        ):
            t0 = time.monotonic()
            p = subprocess.run(
                [sys.executable, "-m", "harness", "simulate", "--sweep", f"--ray_address={addr}",
                 f"--ray_connect_timeout_s={wait}", "--requests=10", f"--out={tmp_path}"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert p.returncode == 2, p.stderr
            assert f"error: no Ray cluster at {addr}: {msg}" in p.stderr, p.stderr
            assert time.monotonic() - t0 < 60 and not (tmp_path / "sweep.json").exists()
    finally:
        listener.close()
