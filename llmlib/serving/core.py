"""The LLMCore contract: one backend engine (or endpoint) behind a small surface.

Required of a subclass: ``_enqueue_impl(requests)`` and a response source that hands
``LLMResponse`` lists to ``self._deliver`` (from its own thread, an asyncio loop or a
callback). Optional: ``_health_check_impl``, ``_close_impl``, and the classmethods
``num_cores_for_workload`` / ``config_for_core``.

Requests issued together may arrive as a ``RequestBatch`` (columns). A core gets it as is
only if it declares ``capabilities.batches`` (and may then answer with a ``ResponseBatch``
through ``_deliver_batch``); any other core gets the batch's ``LLMRequest`` list.

The base keeps the books: which requests are pending, telemetry (pending count, TTFT and
TPOT moving averages), warmup mode (responses are not forwarded), and failure: if the
backend dies, ``_fail`` completes every pending request as failed so LoadGen never hangs.

A thread that has handed responses to the callback (LoadGen, in a run) must not end while
the test runs: LoadGen frees a finished thread's log buffers while its I/O thread may still
swap them, a use-after-free that kills the process with SIGSEGV in
``TlsLogger::SwapBuffers`` (reproduced with LoadGen 6.0.17 alone: threads that each complete
a few thousand queries and exit). So a core's own thread that stops early, because its
backend died, parks in ``_outlive_test`` until ``close()``, which the harness calls after
LoadGen has returned.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmlib.errors import HealthCheckError
from llmlib.serving.request import (
    LLMRequest,
    LLMResponse,
    RequestBatch,
    ResponseBatch,
    failed_response,
)

if TYPE_CHECKING:  # (settings imports the policies, which import this)
    from pathlib import Path

    from llmlib.config.settings import Config

log = logging.getLogger(__name__)

# gets a list of LLMResponse, or a ResponseBatch from a core that answers columns
CompletionCallback = Callable[[list[LLMResponse] | ResponseBatch], None]


@dataclass(frozen=True, slots=True)
class CoreCapabilities:
    streaming: bool = True
    token_ids_out: bool = True
    loglikelihood: bool = False
    max_concurrency: int | None = None
    batches: bool = False  # _enqueue_impl takes RequestBatch columns as they are


class Telemetry:
    """Live per-core numbers that traffic policies read (EWMA with weight ``alpha``)."""

    __slots__ = (
        "alpha", "ttft_ewma_ns", "tpot_ewma_ns", "completed", "failed", "tokens", "observed",
        "fail_streak", "last_error",
    )  # fmt: skip

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.ttft_ewma_ns: float | None = None
        self.tpot_ewma_ns: float | None = None
        self.completed = 0
        self.failed = 0
        self.tokens = 0
        self.observed = 0  # TTFTs and TPOTs folded in: readers can tell nothing changed
        self.fail_streak = 0  # failures since the last success
        self.last_error = ""

    def observe_ttft(self, ns: int) -> None:
        self.observed += 1
        old = self.ttft_ewma_ns
        self.ttft_ewma_ns = float(ns) if old is None else old + self.alpha * (ns - old)

    def observe_tpot(self, ns: float) -> None:
        self.observed += 1
        old = self.tpot_ewma_ns
        self.tpot_ewma_ns = float(ns) if old is None else old + self.alpha * (ns - old)


class LLMCore(ABC):
    """Base class of every backend. See the module docstring for the contract."""

    name: ClassVar[str] = "abstract"
    capabilities: ClassVar[CoreCapabilities] = CoreCapabilities()

    def __init__(
        self, core_id: int, cfg: Config, callback: CompletionCallback | None = None
    ) -> None:
        self.core_id = core_id
        self.cfg = cfg
        self.callback = callback
        self.telemetry = Telemetry()
        # request id -> its request (or the RequestBatch it came in): what is in flight
        self._pending: dict[int, LLMRequest | RequestBatch] = {}
        self._first_ns: dict[int, int] = {}
        self._warmup = False
        self._dead: str | None = None
        self._idle = threading.Condition()
        self._flush_waiters = 0  # _deliver notifies only when someone waits in flush()
        self._closed = threading.Event()  # set first thing in close(): parked threads go
        # the pool's breaker (llmlib.serving.health): told when answers held a failure or we died
        self.health_hook: Callable[[LLMCore], None] | None = None

    # --- sizing ---------------------------------------------------------------------------
    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        """How many cores of this type the workload gets (default: ``cfg.num_cores`` or 1)."""
        return int(getattr(cfg, "num_cores", 1) or 1)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Raise ConfigError for settings this core cannot run with (checked before any
        process starts). Default: nothing to check."""
        return None

    @classmethod
    def preflight(cls, cfg: Config) -> None:
        """Raise ConfigError for what only a connection can tell (a cluster that cannot
        hold the workers asked for): run once, by the command, after ``validate_config``
        and before any test starts. Default: nothing to check."""
        return None

    @classmethod
    def config_for_core(cls, index: int, cfg: Config) -> Any:
        """The configuration core ``index`` is built with (default: the shared one)."""
        return cfg

    # --- public surface -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_ids(self) -> Container[int]:
        """The ids of the requests still pending here (a live view: ``id in pending_ids``)."""
        return self._pending.keys()

    @property
    def alive(self) -> bool:
        return self._dead is None

    @property
    def down_reason(self) -> str:
        """Why the core is down ('' while it is alive)."""
        return self._dead or ""

    def enqueue(self, requests: Sequence[LLMRequest]) -> None:
        """Hand requests (a list, or a RequestBatch) to the backend. Never raises for a
        runtime failure: the requests are completed as failed instead."""
        if not requests:
            return
        pending = self._pending
        if type(requests) is RequestBatch:
            pending.update(dict.fromkeys(requests.request_ids, requests))
            if not self.capabilities.batches:
                requests = requests.requests()
        else:
            for r in requests:
                pending[r.request_id] = r
        if self._dead is not None:
            self._fail_requests(requests, f"core {self.core_id} is down: {self._dead}")
            return
        try:
            self._enqueue_impl(requests)
        except Exception as exc:  # a backend failure becomes failed requests, not a hang
            log.exception("core %d: enqueue failed", self.core_id)
            self._fail_requests(requests, f"enqueue failed: {exc!r}")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until nothing is pending; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            self._flush_waiters += 1
            try:
                while self._pending:
                    left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                    if left <= 0:
                        return False
                    self._idle.wait(left)
            finally:
                self._flush_waiters -= 1
        return True

    @contextmanager
    def warmup_mode(self) -> Iterator[None]:
        """Responses produced inside are not forwarded to the callback (LoadGen never sees
        warmup queries)."""
        self._warmup = True
        try:
            yield
        finally:
            self._warmup = False

    def run_health_check(self) -> None:
        """Raise HealthCheckError if the backend is not ready to serve."""
        if self._dead is not None:
            raise HealthCheckError(f"core {self.core_id} ({self.name}) is down: {self._dead}")
        try:
            self._health_check_impl()
        except HealthCheckError:
            raise
        except Exception as exc:
            raise HealthCheckError(f"core {self.core_id} ({self.name}): {exc}") from exc

    def report_notes(self) -> list[str]:
        """Lines for the run's report (what the backend did that a reader should know)."""
        return []

    def loglikelihood(
        self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[float]:
        """For each pair, the sum of the continuation's token log-probabilities after its
        context (blocking; a caller on an event loop runs it in a thread). Only a core whose
        capabilities say ``loglikelihood`` implements it."""
        raise NotImplementedError(f"core type {self.name} cannot score text")

    def reasoning_records(self) -> list[tuple[int, int, int, int, int]]:
        """For reasoning models, per finished request: (request id, sample index, reasoning
        tokens, answer tokens, ns from issue to the first answer token, -1 if unknown).
        Empty when the backend saw no reasoning (the default)."""
        return []

    def write_records(self, run_dir: Path) -> list[str]:
        """Write the core's own per-request records into ``run_dir`` (once the test is over);
        the names of the files written. None by default."""
        return []

    def close(self) -> None:
        """Stop the backend; whatever is still pending completes as failed."""
        self._closed.set()
        try:
            self._close_impl()
        finally:
            if self._pending:
                self._fail_ids(list(self._pending), "core closed with work pending")

    # --- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        """Submit requests to the backend; responses arrive later through ``_deliver``
        (or ``_deliver_batch``). ``requests`` is a RequestBatch only for a core whose
        capabilities say ``batches``."""

    def _health_check_impl(self) -> None:  # noqa: B027 - optional hook
        """Raise if not ready. Default: ready."""

    def _close_impl(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources. Default: nothing."""

    def _deliver(self, responses: list[LLMResponse]) -> None:
        """Record responses (pending, telemetry) and forward them unless warming up.

        Only responses for requests still pending go on, so a request is never completed
        twice (say, by its backend and by ``_fail`` racing it)."""
        pending, first, tel = self._pending, self._first_ns, self.telemetry
        forward: list[LLMResponse] = []
        completed = tokens = failed = 0
        streak = tel.fail_streak
        for r in responses:
            rid = r.request_id
            if not r.is_final:
                req = pending.get(rid)
                if req is not None and rid not in first:
                    first[rid] = r.time_ns
                    tel.observe_ttft(r.time_ns - req.issue_ns)
                    forward.append(r)
                continue
            if pending.pop(rid, None) is None:
                continue
            forward.append(r)
            t_first = first.pop(rid, None) if first else None
            if r.error is not None:
                failed += 1
                streak += 1
                tel.last_error = r.error
                continue
            n = len(r.output_tokens)
            streak = 0
            completed += 1
            tokens += n
            if t_first is not None and n > 1:
                tel.observe_tpot((r.time_ns - t_first) / (n - 1))
        tel.completed += completed
        tel.tokens += tokens
        tel.fail_streak = streak
        if failed:
            tel.failed += failed
            if self.health_hook is not None:
                self.health_hook(self)
        if forward and not self._warmup and self.callback is not None:
            self.callback(forward)
        if not pending and self._flush_waiters:  # (a missed notify costs one 50 ms poll)
            with self._idle:
                self._idle.notify_all()

    def _deliver_batch(self, batch: ResponseBatch) -> None:
        """``_deliver`` for final, successful responses as columns (a core that answers
        RequestBatch columns). As there, only requests still pending go on."""
        pending, ids, outs = self._pending, batch.request_ids, batch.outputs
        pop = pending.pop
        gone: set[int] | None = None
        for rid in ids:
            if pop(rid, None) is None:  # completed already (failed by _fail racing us)
                if gone is None:
                    gone = set()
                gone.add(rid)
        if gone:
            keep = [k for k, rid in enumerate(ids) if rid not in gone]
            batch = ResponseBatch(
                [ids[k] for k in keep], [outs[k] for k in keep], batch.time_ns, batch.core_id
            )
        first = self._first_ns
        if first:
            for rid in batch.request_ids:
                first.pop(rid, None)
        tel = self.telemetry
        tel.fail_streak = 0
        tel.completed += len(batch.request_ids)
        tel.tokens += sum(map(len, batch.outputs))
        if batch.request_ids and not self._warmup and self.callback is not None:
            self.callback(batch)
        if not pending and self._flush_waiters:
            with self._idle:
                self._idle.notify_all()

    def _outlive_test(self) -> None:
        """Park the calling thread (one that may have delivered to LoadGen and is about to
        end: its backend died) until ``close()``; see the module docstring for why."""
        self._closed.wait()

    def _fail(self, reason: str) -> None:
        """The backend died: mark the core down and fail everything pending."""
        log.error("core %d (%s) failed: %s", self.core_id, self.name, reason)
        self._dead = reason
        if self.health_hook is not None:  # out of the pool's rotation before anything else
            self.health_hook(self)
        self._fail_ids(list(self._pending), f"core {self.core_id} failed: {reason}")

    def _fail_requests(self, requests: Sequence[LLMRequest], reason: str) -> None:
        """Complete ``requests`` (a list or a RequestBatch) as failed (those still pending)."""
        if type(requests) is RequestBatch:
            self._fail_ids(requests.request_ids, reason)
        else:
            self._fail_ids([r.request_id for r in requests], reason)

    def _fail_ids(self, request_ids: Sequence[int], reason: str) -> None:
        now, pending = time.perf_counter_ns(), self._pending
        todo = [rid for rid in request_ids if rid in pending]
        if todo:
            self._deliver([failed_response(rid, reason, now, self.core_id) for rid in todo])
