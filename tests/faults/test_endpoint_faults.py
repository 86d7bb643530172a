"""The endpoint core against a server that misbehaves (tests/faults/fault_server.py), through
real LoadGen: every issued query is completed or counted as failed, the run is INVALID, the
exit status is 0 (PerformanceOnly) and the run ends in bounded time, never on CI's clock."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from llmlib.config.settings import REPO_ROOT
from tests.conftest import run_harness

pytestmark = pytest.mark.slow


class FaultServer:
    def __init__(self, mode, every=3):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.fault_server", f"--mode={mode}",
             f"--every={every}"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"fault server did not start: {line!r}")
        self.url = m.group(1)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def run_against(tmp_path, server, *more):
    t0 = time.monotonic()
    p, runs = run_harness(
        tmp_path,
        "--core_type=openai",
        f"--server_urls={server.url}",
        "--scenarios=server",
        "--server_target_qps=40",
        "--min_duration=2000",
        "--min_query_count=60",
        "--warmup_queries=0",
        "--stall_timeout_s=1",
        "--endpoint_timeout_s=20",
        "--policy_flags=eject_after:0",  # one server: keep sending, every fault shows
        *more,
        timeout=150,
    )
    took = time.monotonic() - t0
    s, run_dir = runs[("server", "performance")]
    rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
    return p, s, rows, took


def run_fault(tmp_path, mode, *more, every=3):
    """run_against a fault server of ``mode``, stopped after the run whatever happens."""
    server = FaultServer(mode, every)
    try:
        return run_against(tmp_path, server, *more)
    finally:
        server.stop()


# mode -> what the failed requests' reason says
EXPECT = {
    "bad_json": "not JSON in the stream",
    "no_done": "Response payload is not completed",
    "http500": "HTTP 500",
    "error_event": "server error",
    "stall": "stopped for over 1 s after it began",
    "zero_tokens": "empty stream",
    "truncated": "Response payload is not completed",
    "silent": "no byte from",
}


@pytest.mark.parametrize("mode", sorted(EXPECT))
def test_every_query_is_accounted_for_whatever_the_server_does(tmp_path, mode):
    p, s, rows, took = run_fault(tmp_path, mode)
    assert p.returncode == 0, p.stderr
    h = s["harness"]
    failed = [r for r in rows if r["error"]]
    assert len(rows) == h["issued"] > 0
    assert h["completed"] + h["failed"] == h["issued"] and len(failed) == h["failed"] > 0
    assert h["completed"] > 0  # two of three requests are served properly
    assert s["validity"] == "INVALID"
    assert all(EXPECT[mode] in r["error"] for r in failed), {r["error"] for r in failed}
    tpot = s["loadgen"]["tpot_ns"]
    assert all(0 <= v < 60e9 for v in tpot.values()), tpot
    assert took < 120


def test_a_request_hung_up_on_before_any_answer_is_sent_again_once(tmp_path):
    p, s, rows, _ = run_fault(tmp_path, "stale")  # each connection's second request
    assert p.returncode == 0, p.stderr
    h = s["harness"]
    why = Counter(r["error"] for r in rows if r["error"])
    assert h["failed"] == 0 and h["completed"] == h["issued"] == len(rows) > 0, why
    log = "".join(f.read_text() for f in tmp_path.rglob("harness.log"))
    assert "sent again on a connection of its own" in log
    p, s, rows, _ = run_fault(tmp_path / "always", "hangup", every=1)  # on every request
    assert p.returncode == 0, p.stderr
    h = s["harness"]
    assert h["failed"] == h["issued"] == len(rows) > 0 and s["validity"] == "INVALID"
    assert all("Server disconnected" in r["error"] for r in rows), {r["error"] for r in rows}


def test_a_mix_of_faults_through_worker_processes(tmp_path):
    p, s, rows, took = run_fault(tmp_path, "mix", "--workers_per_core=2",
                                 "--fail_on_errors=true", every=2)  # fmt: skip
    assert p.returncode == 1 and "requests failed (--fail_on_errors" in p.stderr
    h = s["harness"]
    assert h["completed"] + h["failed"] == h["issued"] == len(rows)
    errors = " ".join(r["error"] for r in rows)
    for text in ("not JSON", "HTTP 500", "server error", "empty stream", "no byte from"):
        assert text in errors
    partial = [r for r in rows if r["error"] and r["ttft_ms"]]
    assert partial and s["harness"]["failed_after_first_token"] == len(partial)
    assert took < 120


def test_a_worker_process_killed_mid_run_fails_its_core_and_the_run_ends(tmp_path):
    from tests.faults.test_signals import sessions_and_children, wait_started

    server = FaultServer("none")
    p = None
    try:
        t0 = time.monotonic()
        p = subprocess.Popen(
            [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}",
             "--core_type=openai", f"--server_urls={server.url}",
             "--workers_per_core=2", "--scenarios=server", "--server_target_qps=40",
             "--min_duration=6000", "--progress=false"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        run_dir = wait_started(tmp_path)
        child = [pid for pid, _, ppid, cmd in sessions_and_children(p.pid)
                 if ppid == p.pid and "_run_one" in cmd]  # fmt: skip
        workers = [pid for pid, _, ppid, cmd in sessions_and_children(p.pid)
                   if ppid in child and "spawn_main" in cmd]  # fmt: skip
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        out, err = p.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        if p is not None and p.poll() is None:  # a hung run must not outlive its test
            p.kill()
            p.communicate()
        server.stop()
    assert p.returncode == 0, err
    s = json.loads((run_dir / "summary.json").read_text())
    h = s["harness"]
    rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
    assert len(rows) == h["issued"] == h["completed"] + h["failed"] and h["failed"] > 0
    assert any("worker process" in e and "exited (code -9)" in e for e in h["errors"])
    assert [(e["core"], e["event"]) for e in s["core_health"]] == [(0, "down")]
    assert s["validity"] == "INVALID" and took < 90
