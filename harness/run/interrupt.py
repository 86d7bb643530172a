"""Stopping a run: SIGINT/SIGTERM stop the whole tree, and the test in progress keeps what it
has.

The driver (``python -m harness``) runs each test in a child process in a session of its
own (``start_new_session``), so the child and everything it starts (client worker processes,
multiprocessing's resource tracker) form one process group; a launched server has its own
group (``llmlib.deploy.launch``). On the first SIGINT or SIGTERM the driver passes the signal to the
child and gives it ``GRACE_S`` to write its partial results; then it kills the child's group,
stops the launched server, prints one line saying where the results are, and exits with
128 + the signal (130, 143). A second signal forces: the groups are killed at once.

In the child, LoadGen's ``StartTest`` runs on a thread of its own while the main thread
waits, so Python's signal handlers (which run only on the main thread, between bytecodes)
run at once rather than when the test ends. The handler writes ``requests.csv`` and a
``summary.json`` marked INTERRUPTED (issued, completed, failed, still open), closes the pool
with a bound, and leaves with ``os._exit``: LoadGen cannot be stopped cleanly from Python
(its ``AbortTest`` is not in the bindings). The child also watches its parent: if the
driver dies, the child stops as if signalled. Worker processes ignore SIGINT (their core
stops them) and exit when their parent is gone (``llmlib.serving.procpool``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("harness")

GRACE_S = 8.0  # the child's time to write what it has before its group is killed
CLOSE_S = 3.0  # the child's time to close its pool once interrupted
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    return 128 + signum


# --- the child: one test ------------------------------------------------------------------
@dataclass
class TestInProgress:
    """What an interrupted test writes: set by the runner once its pieces exist."""

    run_dir: Path
    label: str
    rlog: Any = None  # llmlib.serving.request_log.RequestLog
    server: Any = None  # the pool (close() fails what it holds)
    t0_ns: int = 0
    base: dict[str, Any] | None = None  # summary.json's identity (benchmark, scenario, mode)


class ChildSignals:
    """The child's side (see the module docstring): handlers on the main thread, a watch on
    the parent, and ``wait_for`` to run LoadGen on a thread while the main thread waits."""

    def __init__(self) -> None:
        self.current: TestInProgress | None = None
        self._stopping = False
        self._parent = os.getppid()

    def install(self) -> ChildSignals:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()
        return self

    def _watch_parent(self) -> None:
        while os.getppid() == self._parent:
            time.sleep(0.5)
        log.error("the driver process is gone: stopping this test")
        os.kill(os.getpid(), signal.SIGTERM)

    def wait_for(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a thread; wait on the main thread, where signal handlers run."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the main thread
                errors.append(exc)

        t = threading.Thread(target=run, name="loadgen", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.2)
        if errors:
            raise errors[0]

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stopping:  # a second signal: leave now
            os._exit(exit_status(signum))
        name = signal.Signals(signum).name
        log.error("%s: stopping; writing what the test has", name)
        self._leave(exit_status(signum), "INTERRUPTED", [f"interrupted by {name}"],
                    {"interrupted_by": name})  # fmt: skip

    def stop_settled(self, facts: dict[str, Any]) -> None:
        """``--stop_when_invalid``: the verdict is settled INVALID (``harness.run.stop_early``):
        the partial results written as that, the process ended with status 0."""
        self._leave(0, "INVALID", [f"stopped early: {facts['reason']}"], {"stopped_early": facts})

    def _leave(self, status: int, validity: str, reasons: list[str], extra: dict[str, Any]
               ) -> None:  # fmt: skip
        """What the test has written down, the pool closed (within ``CLOSE_S``), then out."""
        if self._stopping:
            return
        self._stopping = True
        cur = self.current
        if cur is not None:
            try:
                write_partial(cur, validity, reasons, extra)
            except Exception:
                log.exception("writing the stopped test's results failed")
            if cur.server is not None:
                closer = threading.Thread(target=cur.server.close, daemon=True)
                closer.start()
                closer.join(CLOSE_S)
        logging.shutdown()
        os._exit(status)


def write_partial(cur: TestInProgress, validity: str, reasons: list[str],
                  extra: dict[str, Any]) -> None:  # fmt: skip
    """requests.csv and a summary.json / report.md marked ``validity`` (INTERRUPTED, or
    INVALID when stopped early), from the request log."""
    counts: dict[str, Any] = {"issued": 0, "completed": 0, "failed": 0}
    if cur.rlog is not None:  # (LoadGen still issues meanwhile: one snapshot for all)
        cur.rlog.finish()  # (requests/ complete: what is still open, with no final time)
        counts = cur.rlog.write_csv(cur.run_dir / "requests.csv", cur.t0_ns)
    counts["open"] = counts["issued"] - counts["completed"] - counts["failed"]
    summary = {
        **(cur.base or {}),
        "validity": validity,
        **extra,
        "label": cur.label,
        "run_dir": str(cur.run_dir),
        "loadgen": {},
        "harness": counts,
        "reasons": reasons,
    }
    (cur.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (cur.run_dir / "report.md").write_text(
        f"# {cur.label}: {validity}"
        + (f" by {extra['interrupted_by']}" if "interrupted_by" in extra else "")
        + f"\n\n{'; '.join(reasons)}.\n\n"
        f"{counts['issued']} issued, {counts['completed']} completed, {counts['failed']} "
        f"failed, {counts['open']} still open when it stopped. LoadGen's logs here are "
        "partial; requests.csv has every issued request.\n"
    )


# --- the driver ---------------------------------------------------------------------------
class DriverSignals:
    """The driver's side: the first signal goes to the running child (or, between tests,
    raises ``Interrupted``), a grace timer then kills the child's group; a second signal
    kills it at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._before: dict[int, Any] = {}

    def install(self) -> DriverSignals:
        for sig in SIGNALS:
            self._before[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)

    def run(self, cmd: list[str], **kw: Any) -> int:
        """Run the child in a session of its own and wait for it (a signal meanwhile is
        passed on; the wait goes on until the child has gone)."""
        if self.signum is not None:
            raise Interrupted(self.signum)
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        with self._lock:
            self.child = proc
        try:
            return proc.wait()
        finally:
            with self._lock:
                self.child = None
                if self._timer is not None:
                    self._timer.cancel()
            kill_group(proc.pid)  # whatever the child left in its group goes with it

    def _on_signal(self, signum: int, frame: Any) -> None:
        with self._lock:
            child, first = self.child, self.signum is None
            if first:
                self.signum = signum
        if child is None:
            if first:  # between tests (say, a server starting): stop here
                raise Interrupted(signum)
            return  # already stopping: let the clean-up finish
        if not first:  # force
            kill_group(child.pid)
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)
        self._timer = threading.Timer(GRACE_S, kill_group, (child.pid,))
        self._timer.daemon = True
        self._timer.start()


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def say_interrupted(run_dir: Path, signum: int) -> None:
    """The one line the driver prints for the interrupted test."""
    name = signal.Signals(signum).name
    if sys.stderr.isatty():  # off the line a progress bar or ^C left
        print(file=sys.stderr)
    s = run_dir / "summary.json"
    if s.is_file():
        h = json.loads(s.read_text()).get("harness", {})
        print(
            f"interrupted by {name}: partial results in {run_dir} ({h.get('issued', 0)} "
            f"issued, {h.get('completed', 0)} completed, {h.get('failed', 0)} failed, "
            f"{h.get('open', 0)} open; summary.json marked INTERRUPTED)",
            file=sys.stderr,
        )
    else:
        print(f"interrupted by {name} before the test started; nothing was measured",
              file=sys.stderr)  # fmt: skip
