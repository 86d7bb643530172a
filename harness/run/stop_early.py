"""``--stop_when_invalid``: a Server test stopped as soon as its verdict is settled INVALID,
whatever the queries still to come do. The capacity search's probes use it (a probe far
above the peak breaks in its first seconds and need not run its whole length).

A verdict is settled, not estimated, when one of these holds (LoadGen's own verdict would
then be INVALID too: its early stopping only adds to what a plain percentile demands):

- a request failed (a search's probe holds only with none);
- more requests are already past the TTFT limit than the run's latency percentile (0.99
  for the LLM benchmarks) allows over the most queries the run can issue. A request still
  waiting for its first token longer than the limit counts: its TTFT can only be later.
  The same for TPOT (finished requests only) and, for benchmarks without token latencies,
  for the whole latency.

"The most queries the run can issue" is 1.25 x the larger of ``min_query_count`` and target
QPS x ``min_duration``: LoadGen stops at the later of the two, and a Poisson schedule of a
few hundred queries runs a few percent over its expected length, never a quarter.

On a settled verdict the watch writes what the test has (``requests.csv``, a summary.json
with validity INVALID, its reason and ``stopped_early``), closes the pool (a server sees its
connections close: vLLM and llama.cpp abort such requests) and ends the process with status
0; LoadGen cannot be stopped from Python otherwise (``harness.run.interrupt``)."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmlib.serving.request_log import RequestLog

log = logging.getLogger("harness")
RUN_OVER = 1.25  # the most queries a run can issue, over its expected count


@dataclass(frozen=True)
class Limits:
    """What a Server run is judged by (from LoadGen's TestSettings)."""

    percentile: float  # 0.99
    ttft_ns: int  # 0: no token latencies (then latency_ns)
    tpot_ns: int
    latency_ns: int
    most_queries: int  # the most the run can issue

    @classmethod
    def of(cls, ts: Any) -> Limits:
        expected = max(ts.min_query_count, ts.server_target_qps * ts.min_duration_ms / 1000)
        tokens = bool(ts.use_token_latencies)
        return cls(
            float(ts.server_target_latency_percentile),
            int(ts.ttft_latency) if tokens else 0,
            int(ts.tpot_latency) if tokens else 0,
            int(ts.server_target_latency_ns),
            math.ceil(RUN_OVER * expected),
        )

    @property
    def allowed(self) -> int:
        """Requests past a limit that the percentile can still absorb."""
        return math.floor((1 - self.percentile) * self.most_queries + 1e-9)


def settled(t: dict[str, np.ndarray], now_ns: int, lim: Limits) -> dict[str, Any] | None:
    """The settled-INVALID facts of the request log's table ``t`` at ``now_ns``, or None."""
    iss, first, final = (np.asarray(t[k], np.int64) for k in ("issue_ns", "first_ns", "final_ns"))
    ntok = np.asarray(t["n_tokens"], np.int64)
    failed = int((np.asarray(t["error"], dtype=object) != "").sum())
    base = {"issued": len(iss), "allowed": lim.allowed, "most_queries": lim.most_queries}
    if failed:
        return {**base, "limit": "failures", "count": failed, "waiting": 0,
                "reason": f"{failed} of {len(iss)} requests failed"}  # fmt: skip
    checks: list[tuple[str, int, np.ndarray, np.ndarray]] = []
    open_ = final == 0
    if lim.ttft_ns > 0:
        waiting = open_ & (first == 0) & (now_ns - iss > lim.ttft_ns)
        checks.append(("TTFT", lim.ttft_ns, (first > 0) & (first - iss > lim.ttft_ns), waiting))
        done = (final > 0) & (first > 0) & (ntok > 1)
        tpot = np.zeros(len(iss))
        tpot[done] = (final[done] - first[done]) / (ntok[done] - 1)
        checks.append(("TPOT", lim.tpot_ns, done & (tpot > lim.tpot_ns), np.zeros(0, bool)))
    elif lim.latency_ns > 0:
        late = (final > 0) & (final - iss > lim.latency_ns)
        checks.append(("latency", lim.latency_ns, late, open_ & (now_ns - iss > lim.latency_ns)))
    for name, limit, late, waiting in checks:
        n, w = int(late.sum()), int(waiting.sum())
        if n + w > lim.allowed:
            return {**base, "limit": name, "count": n + w, "waiting": w,
                    "reason": f"{n + w} requests past the {limit / 1e6:g} ms {name} limit"
                    + (f" ({w} still waiting for a first token)" if w else "")
                    + f", more than the {lim.allowed} that a p{lim.percentile * 100:g} over "
                    f"at most {lim.most_queries} queries allows"}  # fmt: skip
    return None


class StopWhenInvalid:
    """A thread that checks the request log every ``interval_s`` and, once the verdict is
    settled, calls ``stop(facts)`` (which ends the process; see the module docstring)."""

    def __init__(self, rlog: RequestLog, limits: Limits, t0_ns: int, stop: Any,
                 interval_s: float = 0.25) -> None:  # fmt: skip
        self.rlog, self.limits, self.t0_ns, self.stop = rlog, limits, t0_ns, stop
        self.interval = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopWhenInvalid:
        self._thread = threading.Thread(target=self._run, name="stop-when-invalid", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        wait = self.interval
        while not self._done.wait(wait):
            now = time.perf_counter_ns()
            try:
                facts = settled(self.rlog.table(), now, self.limits)
                # (a long run's table is read back from Parquet: at most 2% of the time)
                wait = max(self.interval, 50 * (time.perf_counter_ns() - now) / 1e9)
            except Exception:  # a watch must never cost the test: it only stops watching
                log.exception("the stop-when-invalid watch failed; the test runs its length")
                return
            if facts is not None and not self._done.is_set():
                facts["after_s"] = round((now - self.t0_ns) / 1e9, 3)
                log.warning("stopping early after %.1f s: %s", facts["after_s"], facts["reason"])
                self.stop(facts)
                return
