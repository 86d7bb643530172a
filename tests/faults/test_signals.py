"""Stopping a run with a signal: the whole tree goes (test child, worker processes, the
multiprocessing resource tracker, a launched server), the interrupted test writes what it has,
one line says where, and the exit status is 128 + the signal. Checked with /proc: no process
of the run's sessions survives."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmlib.config.settings import REPO_ROOT

pytestmark = pytest.mark.slow

SERVED = [
    "--scenarios=server",
    "--core_type=openai",
    "--launch_server=llmlib",
    "--server_args=--engine_profile=fixed",
    "--workers_per_core=2",
    "--server_target_qps=50",
    "--min_duration=120000",  # far longer than the test waits: only a signal ends it
    "--progress=false",
]


def start(tmp_path, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}", *args],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_started(tmp_path, timeout=90):
    """The run directory once LoadGen's test has run a little."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in (tmp_path / "logs").rglob("harness.log"):
            if "LoadGen test started" in log.read_text():
                time.sleep(1.5)  # some queries issued and answered
                return log.parent
        time.sleep(0.2)
    raise AssertionError("the test never started")


def sessions_and_children(parent_pid):
    """(pid, session id, parent pid, command) of every process now."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        out.append((int(d.name), int(fields[3]), int(fields[1]), cmd))
    return out


def run_tree(parent_pid):
    """The sessions the run started (the test child's, a launched server's)."""
    return {sid for pid, sid, ppid, _ in sessions_and_children(parent_pid) if ppid == parent_pid}


def survivors(sessions, parent_pid):
    return [
        (pid, cmd)
        for pid, sid, ppid, cmd in sessions_and_children(parent_pid)
        if sid in sessions or ppid == parent_pid
    ]


def stop_and_check(p, tmp_path, sig, *, twice=False, bound_s=15):
    run_dir = wait_started(tmp_path)
    tree = run_tree(p.pid)
    assert len(tree) >= 1
    t0 = time.monotonic()
    p.send_signal(sig)
    if twice:
        time.sleep(0.05)
        p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while survivors(tree, p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors(tree, p.pid), survivors(tree, p.pid)
    assert took < bound_s
    return run_dir, out, err, took


def check_partial(run_dir, signame):
    s = json.loads((run_dir / "summary.json").read_text())
    h = s["harness"]
    assert s["validity"] == "INTERRUPTED" and s["interrupted_by"] == signame
    assert h["issued"] > 0 and h["completed"] > 0
    assert h["completed"] + h["failed"] + h["open"] == h["issued"]
    rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
    assert len(rows) == h["issued"]
    assert f"INTERRUPTED by {signame}" in (run_dir / "report.md").read_text()


def test_sigterm_stops_the_child_its_workers_and_the_launched_server(tmp_path):
    p = start(tmp_path, *SERVED)
    run_dir, out, err, _ = stop_and_check(p, tmp_path, signal.SIGTERM)
    assert p.returncode == 143, err
    lines = [x for x in err.splitlines() if x.startswith("interrupted")]
    assert len(lines) == 1 and f"partial results in {run_dir}" in lines[0]
    assert "Traceback" not in err
    check_partial(run_dir, "SIGTERM")


def test_sigint_to_the_driver_alone_leaves_no_worker_or_tracker_behind(tmp_path):
    # (a terminal's Ctrl-C reaches the whole process group; kill -INT only the driver)
    p = start(tmp_path, *SERVED)
    run_dir, out, err, _ = stop_and_check(p, tmp_path, signal.SIGINT)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    check_partial(run_dir, "SIGINT")


def test_a_second_sigint_forces(tmp_path):
    p = start(tmp_path, *SERVED)
    _, out, err, took = stop_and_check(p, tmp_path, signal.SIGINT, twice=True)
    assert p.returncode == 130, err


def test_a_driver_killed_outright_takes_its_test_along(tmp_path):
    # SIGKILL cannot be handled: the child and the workers notice their parent is gone
    p = start(tmp_path, "--scenarios=server", "--server_target_qps=50",
              "--min_duration=120000", "--progress=false")  # fmt: skip
    run_dir = wait_started(tmp_path)
    tree = run_tree(p.pid)
    p.kill()
    p.communicate(timeout=30)
    deadline = time.monotonic() + 15
    while survivors(tree, p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors(tree, p.pid)
    check_partial(run_dir, "SIGTERM")  # the child stopped itself as if terminated


def test_the_run_tree_helper_sees_real_processes():
    # the checks above mean something only if /proc is read right
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)  # fmt: skip
    try:
        assert child.pid in run_tree(os.getpid())
        assert any(pid == child.pid for pid, _ in survivors({child.pid}, os.getpid()))
    finally:
        child.kill()
        child.wait()


def test_a_signal_between_tests_stops_the_driver_where_it_is():
    # no child running (say, a server still starting): the driver raises, its clean-up runs
    from harness.run.interrupt import DriverSignals, Interrupted

    d = DriverSignals().install()
    try:
        with pytest.raises(Interrupted) as got:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the handler raises before this ends)
        assert got.value.signum == signal.SIGTERM and d.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # already stopping: no second raise
        time.sleep(0.1)
        with pytest.raises(Interrupted):
            d.run([sys.executable, "-c", "pass"])  # no new test starts once stopped
    finally:
        d.uninstall()
