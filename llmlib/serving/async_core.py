"""``AsyncLoopCore``: the LLMCore base for backends with an asyncio API (HTTP clients,
vLLM's ``AsyncLLM``).

The core owns an event loop on its own thread. ``_enqueue_impl`` hands requests to it
(``call_soon_threadsafe``); each request is a task that waits for one of ``concurrency``
slots and runs the subclass's ``_serve(request)``, which delivers a first-token response
(streamed requests) and a final one through ``_deliver``. Any exception a task raises
becomes a failed response with the reason (``_describe`` words it), so no request can
vanish; ``close()`` cancels what is left, and the base class fails whatever is still pending.

Subclasses implement ``async _serve(req)`` and may override ``async _setup()`` (run on the
loop before the first request), ``async _health()`` and ``async _teardown()``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlib.errors import HealthCheckError
from llmlib.serving.core import CompletionCallback, LLMCore
from llmlib.serving.request import LLMRequest, failed_response

if TYPE_CHECKING:  # (settings imports the policies, which import this)
    from llmlib.config.settings import Config

log = logging.getLogger(__name__)


class RequestFailed(Exception):
    """One request's failure, with the reason the report shows and the output tokens that
    arrived before it (``tokens``, None when none did)."""

    def __init__(self, reason: str, tokens: np.ndarray | None = None) -> None:
        super().__init__(reason)
        self.tokens = tokens


def describe_failure(exc: BaseException) -> str:
    """A failed request's reason: a RequestFailed's own words, else the exception's type and
    message."""
    if isinstance(exc, RequestFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class AsyncLoopCore(LLMCore):
    SETUP_TIMEOUT_S = 600.0
    HEALTH_TIMEOUT_S = 10.0

    def __init__(
        self,
        core_id: int,
        cfg: Config,
        callback: CompletionCallback | None = None,
        concurrency: int = 512,
    ) -> None:
        super().__init__(core_id, cfg, callback)
        self._loop = asyncio.new_event_loop()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{self.name}-{core_id}", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._setup(), self.SETUP_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    # --- for subclasses -------------------------------------------------------------------
    async def _setup(self) -> None:
        """Open sessions, start engines (on the loop)."""

    async def _serve(self, req: LLMRequest) -> None:
        raise NotImplementedError

    async def _health(self) -> None:
        """Raise if not ready."""

    async def _teardown(self) -> None:
        """Close sessions, stop engines (on the loop, after the tasks are cancelled)."""

    def _describe(self, exc: BaseException) -> str:
        """The failure reason for a request that raised ``exc``."""
        return describe_failure(exc)

    # --- the loop thread ------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        """Run ``coro`` on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        self._loop.call_soon_threadsafe(self._start, list(requests))

    def _start(self, requests: list[LLMRequest]) -> None:
        for r in requests:
            t = self._loop.create_task(self._one(r))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _one(self, req: LLMRequest) -> None:
        async with self._slots:
            try:
                await self._serve(req)
            except asyncio.CancelledError:
                self._fail_one(req, "cancelled: the core was closed")
                raise
            except Exception as exc:  # a failure is a record: never let a request vanish
                if not isinstance(exc, RequestFailed | TimeoutError | OSError):
                    log.exception("core %d: request %d", self.core_id, req.request_id)
                self._fail_one(req, self._describe(exc), getattr(exc, "tokens", None))

    def _fail_one(self, req: LLMRequest, reason: str, tokens: np.ndarray | None = None) -> None:
        now = time.perf_counter_ns()
        self._deliver([failed_response(req.request_id, reason, now, self.core_id, tokens)])

    # --- health and close -----------------------------------------------------------------
    def _health_check_impl(self) -> None:
        try:
            self._call(self._health(), self.HEALTH_TIMEOUT_S)
        except HealthCheckError:
            raise
        except TimeoutError:  # (the time waited here, not the request's own limit)
            raise HealthCheckError(f"no answer within {self.HEALTH_TIMEOUT_S:g} s") from None
        except Exception as exc:
            raise HealthCheckError(self._describe(exc)) from exc

    def _close_impl(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._call(self._shutdown(), 60.0)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._teardown()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
