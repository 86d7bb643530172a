"""Client worker processes for a core: N spawned processes, each fed batches through its
own queue, each answering in batches through its own pipe, which one reader thread drains.

Cores use it so one Python process's GIL is not the client's ceiling (the ``openai`` core's
``workers_per_core``, ``triton_grpc``'s clients per server). A worker is
``target(settings, inq, outq)``: it reads batches from ``inq`` until ``None``, and puts
lists of answers on ``outq``. The reader hands every list to ``on_batch``; a worker that
exits while the pool is open is reported once to ``on_death`` (the core then fails what it
has pending: nothing issued is left waiting on a process that is gone). The reader waits on
the answer pipes and the workers' process sentinels together, so a death is seen at once
under any load, and reported after the answers the worker sent before it died. The reader
never ends before ``close`` (a thread that completed queries to LoadGen must not: see
``llmlib.serving.core``).

Each worker has a pipe of its own, not a share of one ``multiprocessing.Queue``: such a
queue's writers hold one lock across processes while they send, and a worker killed holding
it (SIGKILL, the OOM killer) left every other writer, and the news of its death, waiting on
that lock for ever: the run hung (seen in CI, 2026-12-07).
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
        self._on_batch, self._on_death = on_batch, on_death
        self._closing = False
        self.workers: list[tuple[Any, Any]] = []
        self._answers: list[Any] = []  # each worker's pipe, the read end
        for i, s in enumerate(settings):
            inq = ctx.Queue()
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_entry, args=(target, s, inq, w), name=f"{name}-{i}")
            p.daemon = True
            p.start()
            w.close()  # the worker's end only: its exit is then the pipe's end
            self.workers.append((p, inq))
            self._answers.append(r)
        self._reader = threading.Thread(target=self._read, name=f"{name}-rx", daemon=True)
        self._reader.start()

    def __len__(self) -> int:
        return len(self.workers)

    def put(self, k: int, batch: list[Any]) -> None:
        self.workers[k][1].put(batch)

    def _read(self) -> None:
        live = {conn: k for k, conn in enumerate(self._answers)}
        exits = {p.sentinel: k for k, (p, _) in enumerate(self.workers)}
        reported = False
        while not (self._closing and not live):
            if not live and not exits:
                time.sleep(0.5)  # every worker gone: wait for close, delivering nothing
                continue
            for ready in mp_connection.wait([*live, *exits], timeout=0.5):
                if ready in live:
                    self._take(ready, live)
                    continue
                k = exits.pop(ready)  # type: ignore[call-overload]
                conn = self._answers[k]
                while conn in live and conn.poll():  # what it sent before it died
                    self._take(conn, live)
                if not reported and not self._closing:
                    p = self.workers[k][0]
                    p.join(1)  # (its exit code)
                    reported = True
                    self._on_death(f"worker process {p.name} exited (code {p.exitcode})")

    def _take(self, conn: Any, live: dict[Any, int]) -> None:
        """One batch from a worker's pipe to ``on_batch``; at the pipe's end (the worker is
        gone, perhaps mid-message) the pipe leaves ``live``."""
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            del live[conn]
            conn.close()
            return
        deliver(self.name, self._on_batch, self._on_death, batch)

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to stop (``None``), wait, kill stragglers, stop the reader."""
        self._closing = True
        for _, inq in self.workers:
            with contextlib.suppress(Exception):
                inq.put(None)
        for p, inq in self.workers:
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join(timeout_s)
            inq.cancel_join_thread()  # (a dead worker's full pipe must not hold our exit)
        self._reader.join(timeout_s)


def deliver(
    name: str, on_batch: Callable[[list[Any]], None], on_death: Callable[[str], None],
    batch: list[Any],
) -> None:  # fmt: skip
    """A pool's reader hands ``batch`` to ``on_batch``; a failure there is reported to
    ``on_death`` (the core then fails what is pending), never raised: the reader must live
    on, since a dead one strands every query (``WorkerPool``, ``RayWorkerPool``)."""
    try:
        on_batch(batch)
    except Exception as exc:
        log.exception("%s: answers could not be delivered", name)
        on_death(f"{name}: answers could not be delivered: {exc!r}")


def _worker_entry(target: WorkerTarget, settings: Any, inq: Any, answers: Any) -> None:
    """A worker's start: SIGINT ignored (a terminal's Ctrl-C reaches the whole process group;
    the core stops its workers itself), and an exit when the parent is gone (a parent killed
    outright cannot stop them; nothing of a run may outlive it). Its answers go to its own
    pipe, sent by a thread of its own (``put`` never blocks the caller), all sent before it
    returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    outq = _PipeSender(answers)
    try:
        target(settings, inq, outq)
    finally:
        outq.close()


class _Flusher:
    """A thread that ships what callers gather, so no caller waits on the sending: callers
    add under ``_cv``, ``_ship`` gets everything gathered since its last call (False: stop
    early), ``close`` ships what is left and stops the thread."""

    def __init__(self, name: str) -> None:
        self._items: list[Any] = []
        self._cv = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _ship(self, items: list[Any]) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._done:
                    self._cv.wait()
                items, self._items = self._items, []
                done = self._done
            if (items and not self._ship(items)) or done:
                return

    def close(self) -> None:
        """Ship what is left and stop the thread."""
        with self._cv:
            self._done = True
            self._cv.notify()
        self._thread.join()


class _PipeSender(_Flusher):
    """``put`` for a worker's answer pipe: objects sent in order by the flusher thread, so a
    caller (an event loop) never waits on a full pipe; ``close`` sends what is left."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sending = threading.Lock()  # (the flusher's sends and send_now's, one at a time)
        super().__init__("answers")

    def put(self, obj: Any) -> None:
        with self._cv:
            self._items.append(obj)
            self._cv.notify()

    def _ship(self, items: list[Any]) -> bool:
        try:
            with self._sending:
                for obj in items:
                    self._conn.send(obj)
        except OSError:  # the parent is gone: nothing to answer to
            return False
        return True

    def send_now(self, obj: Any) -> bool:
        """Send ``obj`` from the calling thread (one that may wait: an ``Outbox``'s flusher,
        which needs no second hand-off); False once the parent is gone."""
        return self._ship([obj])

    def close(self) -> None:
        super().close()
        self._conn.close()


class Outbox(_Flusher):
    """A worker's answers, sent in batches from any thread: ``emit`` appends, the flusher
    thread puts everything gathered since its last put as one list on ``outq`` (on a worker's
    answer pipe it sends the list itself: one thread between the callers and the pipe)."""

    def __init__(self, outq: Any) -> None:
        self._outq = outq
        super().__init__("outbox")

    def emit(self, items: list[Any]) -> None:
        with self._cv:
            self._items.extend(items)
            self._cv.notify()

    def _ship(self, items: list[Any]) -> bool:
        send_now = getattr(self._outq, "send_now", None)  # a worker's pipe: sent from here
        if send_now is not None:
            return bool(send_now(items))
        self._outq.put(items)
        return True
