"""Which cores of a pool may take traffic: dead cores leave, failing ones rest (a breaker).

A core that is down (its backend died: ``LLMCore.alive`` is False) leaves the rotation at
once and for good: a traffic policy reading pending counts would otherwise favour it, as a
dead core holds nothing (seen: 488 of the next 495 queries sent to the dead one of two).
A core whose last ``eject_after`` answers all failed is ejected for ``eject_s``; then it
gets one probe request. If the probe succeeds the core is back; if it fails the core rests
twice as long as before (at most ``max_eject_s``). ``eject_after`` 0 turns ejection off.

The cores tell the pool (``LLMCore.health_hook``, from their own threads) only when a batch
of answers held a failure or the core died, so a healthy pool pays one truth test per issue.
Every transition is kept as an event (when, which core, what, why) for the report. What
this cannot change: the requests that failed still count, and the run is still INVALID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from llmlib.serving.core import LLMCore
from llmlib.serving.policies import TrafficPolicy
from llmlib.serving.request import LLMRequest

UP, EJECTED, PROBING, DOWN = "up", "ejected", "probing", "down"
UNUSABLE_LOAD = 1 << 40  # what an unusable core's pending count looks like to a policy


class CoreHealth:
    def __init__(
        self,
        cores: Sequence[LLMCore],
        eject_after: int = 5,
        eject_s: float = 10.0,
        max_eject_s: float = 300.0,
        now_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.cores = list(cores)
        self.eject_after, self.now_ns = int(eject_after), now_ns
        self.eject_ns, self.max_eject_ns = int(eject_s * 1e9), int(max_eject_s * 1e9)
        n = len(self.cores)
        self.state = [UP] * n
        self._until = [0] * n  # ejected: when the rest ends
        self._rest = [self.eject_ns] * n  # the next rest's length
        self._probe_mark = [0] * n  # probing: the core's completed count when probed
        self.events: list[dict[str, Any]] = []
        self.t0_ns = now_ns()
        self.trouble = False  # any core not up: issue looks closer
        self._lock = threading.Lock()
        for k, c in enumerate(self.cores):
            c.health_hook = lambda core, k=k: self._on_trouble(k, core)

    # --- from the cores' threads ----------------------------------------------------------
    def _on_trouble(self, k: int, core: LLMCore) -> None:
        with self._lock:
            if self.state[k] == DOWN:
                return
            if not core.alive:
                self._move(k, DOWN, f"core down: {core.down_reason}")
                return
            streak = core.telemetry.fail_streak
            if self.state[k] == PROBING and streak:
                self._eject(k, f"probe failed: {core.telemetry.last_error}")
            elif self.state[k] == UP and 0 < self.eject_after <= streak:
                self._eject(k, f"{streak} failures in a row; the last: {core.telemetry.last_error}")

    def _eject(self, k: int, why: str) -> None:  # (lock held)
        rest = self._rest[k]
        self._until[k] = self.now_ns() + rest
        self._rest[k] = min(2 * rest, self.max_eject_ns)
        self._move(k, EJECTED, f"{why} (rests {rest / 1e9:g} s)")

    def _move(self, k: int, state: str, why: str) -> None:  # (lock held)
        self.state[k] = state
        self.events.append({"t_ns": self.now_ns(), "core": self.cores[k].core_id,
                            "event": state, "reason": why})  # fmt: skip
        self.trouble = any(s != UP for s in self.state)

    # --- from the issuing thread ----------------------------------------------------------
    def usable(self) -> list[bool]:
        """Which cores may take a request now (rests that ended become probes; a probe
        that succeeded brings its core back). Call only when ``trouble`` is set."""
        now = self.now_ns()
        with self._lock:
            for k, s in enumerate(self.state):
                tel = self.cores[k].telemetry
                if s == EJECTED and now >= self._until[k]:
                    self._probe_mark[k] = -1  # the probe is not sent yet
                    self._move(k, PROBING, "rest over: one probe request")
                elif (
                    s == PROBING
                    and 0 <= self._probe_mark[k] < tel.completed
                    and not tel.fail_streak
                ):
                    self._rest[k] = self.eject_ns
                    self._move(k, UP, "probe succeeded")
            mark = self._probe_mark
            return [s == UP or (s == PROBING and mark[k] < 0) for k, s in enumerate(self.state)]

    def assign(
        self, policy: TrafficPolicy, requests: Sequence[LLMRequest], loads: list[int]
    ) -> list[int]:
        """The policy's choice of core for each request, among the usable cores: the others
        look full to the policy, and what it still sends them goes elsewhere (``place``)."""
        if not self.trouble:
            return policy.assign(requests, loads)
        ok = self.usable()
        for k, good in enumerate(ok):
            if not good:
                loads[k] += UNUSABLE_LOAD
        return self.place(policy.assign(requests, loads), loads, ok)

    def place(self, assignment: list[int], loads: list[int], ok: list[bool]) -> list[int]:
        """``assignment`` with requests on cores that may not take them moved to the usable
        core with the fewest pending (a probing core takes one); ``loads`` is the pending
        count the policy was given, updated. With no usable core, nothing moves: the
        requests fail at once on a dead core or wait on a resting one."""
        live = [k for k, good in enumerate(ok) if good]
        if not live:
            return assignment
        out = list(assignment)
        with self._lock:
            for j, k in enumerate(out):
                if ok[k] and self.state[k] == PROBING:
                    if self._probe_mark[k] < 0:  # this request is the probe
                        self._probe_mark[k] = self.cores[k].telemetry.completed
                        continue
                    ok[k] = False
                    live = [i for i in live if i != k]
                if ok[k] or not live:
                    continue
                best = min(live, key=loads.__getitem__)
                loads[k] -= 1
                loads[best] += 1
                out[j] = best
        return out

    def summary(self, origin_ns: int | None = None) -> list[dict[str, Any]]:
        """The events, times in seconds from ``origin_ns`` (the test's start; default: when
        the pool was made)."""
        t0 = self.t0_ns if origin_ns is None else origin_ns
        return [
            {"t_s": round((e["t_ns"] - t0) / 1e9, 3), "core": e["core"], "event": e["event"],
             "reason": e["reason"]}
            for e in self.events
        ]  # fmt: skip


def describe_events(events: list[dict[str, Any]]) -> list[str]:
    """One line per event of ``CoreHealth.summary``, for reports."""
    return [f"{e['t_s']:.3f} s: core {e['core']} {e['event']}: {e['reason']}" for e in events]
