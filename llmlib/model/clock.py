"""Clocks. Real time for runs; a virtual clock for tests of timing behaviour (no sleeps)."""

from __future__ import annotations

import threading
import time


class Clock:
    """``perf_counter_ns`` time; ``wait`` blocks on a condition until a deadline or a notify."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def wait(self, cond: threading.Condition, deadline_ns: int | None) -> None:
        """Called with ``cond`` held. Returns at ``deadline_ns``, on notify, or spuriously."""
        if deadline_ns is None:
            cond.wait()
            return
        left = (deadline_ns - time.perf_counter_ns()) / 1e9
        if left > 0:
            cond.wait(left)


class VirtualClock(Clock):
    """Time moves only when a waiter asks for a deadline: it jumps straight there.

    With no deadline the waiter sleeps for real until notified, so a test can enqueue work
    and get exact, repeatable timestamps."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def advance_to(self, t_ns: int) -> None:
        with self._lock:
            self._now = max(self._now, t_ns)

    def wait(self, cond: threading.Condition, deadline_ns: int | None) -> None:
        if deadline_ns is None:
            cond.wait(0.05)
        else:
            self.advance_to(deadline_ns)
