"""Client worker processes for a core: N spawned processes, each fed batches through its
own queue, all answering in batches into one queue that a reader thread drains.

Cores use it so one Python process's GIL is not the client's ceiling (the ``openai`` core's
``workers_per_core``, ``triton_grpc``'s clients per server). A worker is
``target(settings, inq, outq)``: it reads batches from ``inq`` until ``None``, and puts
lists of answers on ``outq``. The reader hands every list to ``on_batch``; a worker that
exits while the pool is open is reported once to ``on_death`` (the core then fails what it
has pending: nothing issued is left waiting on a process that is gone). A watcher thread
waits on the workers' process sentinels, so a death is seen at once under any load, and
puts the news on the answer queue: the reader reports it after the answers the worker sent
before it died, and the watcher, which never calls the consumer, may end (a thread that
completed queries to LoadGen must not: see ``llmlib.serving.core``).
Timestamps taken in a worker with ``time.perf_counter_ns`` compare with the parent's: on
Linux it is the system's monotonic clock, the same in every process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import connection as mp_connection
from typing import Any

WorkerTarget = Callable[[Any, Any, Any], None]
log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(
        self,
        name: str,
        target: WorkerTarget,
        settings: Sequence[Any],
        on_batch: Callable[[list[Any]], None],
        on_death: Callable[[str], None],
    ) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self._out: Any = ctx.Queue()
        self._on_batch, self._on_death = on_batch, on_death
        self._closing = False
        self.workers: list[tuple[Any, Any]] = []
        for i, s in enumerate(settings):
            inq = ctx.Queue()
            p = ctx.Process(
                target=_worker_entry, args=(target, s, inq, self._out), name=f"{name}-{i}"
            )
            p.daemon = True
            p.start()
            self.workers.append((p, inq))
        self._reader = threading.Thread(target=self._read, name=f"{name}-rx", daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)
        self._watcher.start()

    def __len__(self) -> int:
        return len(self.workers)

    def put(self, k: int, batch: list[Any]) -> None:
        self.workers[k][1].put(batch)

    def _watch(self) -> None:
        """Wait for a worker to exit; put the news on the answer queue (once)."""
        procs = {p.sentinel: p for p, _ in self.workers}
        while not self._closing:
            ready = mp_connection.wait(list(procs), timeout=0.5)
            if ready and not self._closing:
                p = procs[ready[0]]  # type: ignore[index]
                p.join(1)  # (its exit code)
                self._out.put(f"worker process {p.name} exited (code {p.exitcode})")
                return

    def _read(self) -> None:
        reported = False
        while True:
            batch = self._out.get()
            if batch is None:
                return
            if isinstance(batch, str):  # a death, from the watcher
                if not reported and not self._closing:
                    reported = True
                    self._on_death(batch)
                continue
            try:
                self._on_batch(batch)
            except Exception as exc:  # the reader must live on: a dead one strands every query
                log.exception("%s: answers could not be delivered", self.name)
                self._on_death(f"{self.name}: answers could not be delivered: {exc!r}")

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to stop (``None``), wait, kill stragglers, stop the reader."""
        self._closing = True
        for _, inq in self.workers:
            with contextlib.suppress(Exception):
                inq.put(None)
        for p, _ in self.workers:
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
        self._out.put(None)
        self._reader.join(timeout_s)
        self._watcher.join(timeout_s)


def _worker_entry(target: WorkerTarget, settings: Any, inq: Any, outq: Any) -> None:
    """A worker's start: SIGINT ignored (a terminal's Ctrl-C reaches the whole process group;
    the core stops its workers itself), and an exit when the parent is gone (a parent killed
    outright cannot stop them; nothing of a run may outlive it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    target(settings, inq, outq)


class Outbox:
    """A worker's answers, sent in batches from any thread: ``emit`` appends, a flusher
    thread puts everything gathered since its last put as one list on ``outq``."""

    def __init__(self, outq: Any) -> None:
        self._outq = outq
        self._items: list[Any] = []
        self._cv = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._flush, name="outbox", daemon=True)
        self._thread.start()

    def emit(self, items: list[Any]) -> None:
        with self._cv:
            self._items.extend(items)
            self._cv.notify()

    def _flush(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._done:
                    self._cv.wait()
                items, self._items = self._items, []
                done = self._done
            if items:
                self._outq.put(items)
            if done:
                return

    def close(self) -> None:
        """Send what is left and stop the flusher."""
        with self._cv:
            self._done = True
            self._cv.notify()
        self._thread.join()
