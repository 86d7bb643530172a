"""Warmup: wait until every core passes its health check, then send warmup queries that
LoadGen never sees (the cores are in ``warmup_mode``, so nothing reaches the callback)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from llmlib.errors import HealthCheckError, WrongServerError
from llmlib.serving.core import LLMCore
from llmlib.serving.pool import Pool
from llmlib.serving.request import LLMRequest

log = logging.getLogger(__name__)


def wait_until_healthy(
    cores: Sequence[LLMCore],
    timeout_s: float,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Health-check all cores in parallel, retrying each with exponential backoff until it
    passes or ``timeout_s`` runs out; then raise HealthCheckError naming the cores that
    never became ready and their last error. A ``WrongServerError`` is not retried."""
    deadline = clock() + timeout_s

    def one(core: LLMCore) -> None:
        backoff = initial_backoff_s
        while True:
            try:
                core.run_health_check()
                return
            except WrongServerError as exc:  # an answer that waiting will not change
                raise HealthCheckError(f"core {core.core_id} ({core.name}): {exc}") from exc
            except HealthCheckError as exc:
                left = deadline - clock()
                if left <= 0:
                    raise HealthCheckError(
                        f"core {core.core_id} ({core.name}) not ready after {timeout_s:g} s: {exc}"
                    ) from exc
                sleep(min(backoff, left))
                backoff = min(backoff * 2, max_backoff_s)

    with ThreadPoolExecutor(max_workers=max(1, len(cores))) as pool:
        futures = [pool.submit(one, c) for c in cores]
        errors = [str(e) for f in futures if (e := f.exception()) is not None]
    if errors:
        raise HealthCheckError("; ".join(errors))


def run_warmup(server: Pool, requests: Sequence[LLMRequest], timeout_s: float = 300.0) -> int:
    """Send ``requests`` through the pool with every core in warmup mode; wait for them.
    Returns how many failed (a warning, not an error: the run decides)."""
    if not requests:
        return 0
    failed_before = sum(c.telemetry.failed for c in server.cores)
    with server.warmup_mode():
        server.issue(requests)
        if not server.flush(timeout_s):
            raise HealthCheckError(f"warmup queries did not finish within {timeout_s:g} s")
    server.issued = [0] * len(server.cores)
    failed = sum(c.telemetry.failed for c in server.cores) - failed_before
    if failed:
        log.warning("%d of %d warmup queries failed", failed, len(requests))
    return failed
