"""What a request's answer took on the client worker's own clock, next to what it took on the
driver's, for client workers on other hosts (``--client_backend=ray``).

A worker's monotonic clock is another host's, so a core stamps each answer when it reaches
the driver (that time goes to LoadGen) and keeps the worker's own durations beside it: from
the worker's receipt of the request to its first and last token. The difference is what the
hop to the driver cost. ``first`` is called for a streamed request's first token, ``final``
for its last (a request answered in one piece has no ``first``: its first token is its last).
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

HEAD = "request_id,driver_ttft_ns,driver_latency_ns,worker_ttft_ns,worker_latency_ns"


class WorkerClocks:
    """Per answer, flat: its id, ns from issue to the first and the last token on the
    driver's clock, and from the worker's receipt to the same two on the worker's."""

    def __init__(self) -> None:
        self._wfirst: dict[int, int] = {}  # worker's first-token time, until the final answer
        self._dfirst: dict[int, int] = {}  # the driver's, likewise
        self.rows = array("q")

    def __len__(self) -> int:
        return len(self.rows) // 5

    def first(self, rid: int, worker_t: int, now: int) -> None:
        self._wfirst[rid] = worker_t
        self._dfirst[rid] = now

    def final(self, rid: int, issue: int, worker_t: int, receipt: int, now: int) -> None:
        """The last token: ``issue`` on the driver's clock, ``receipt`` on the worker's (0
        where either is unknown: a failed or forgotten request leaves no row)."""
        wfirst, dfirst = self._wfirst.pop(rid, worker_t), self._dfirst.pop(rid, now)
        if issue and receipt:
            self.rows.extend((rid, dfirst - issue, now - issue, wfirst - receipt,
                              worker_t - receipt))  # fmt: skip

    def forget(self, rid: int) -> None:
        self._wfirst.pop(rid, None)
        self._dfirst.pop(rid, None)

    def line(self) -> str:
        """``on the workers' clocks, ...; the hop to the driver added ...`` (p50/p99, ms),
        or "" before any answer."""
        if not len(self):
            return ""
        c = np.frombuffer(self.rows, dtype=np.int64).reshape(-1, 5)[:, 1:] / 1e6
        hop_first, hop_last = c[:, 0] - c[:, 2], c[:, 1] - c[:, 3]

        def pp(v: np.ndarray) -> str:
            return f"p50 {np.percentile(v, 50):.2f} / p99 {np.percentile(v, 99):.2f} ms"

        return (
            f"on the workers' clocks, over {len(c)} answers: first token {pp(c[:, 2])}, last "
            f"{pp(c[:, 3])}; the hop to the driver added {pp(hop_first)} to the first token "
            f"and {pp(hop_last)} to the last"
        )

    def write(self, run_dir: Path, core_id: int) -> list[str]:
        """``worker_clocks_core<N>.csv``, a row per answer (warmup queries have negative
        ids); the file's name, or none before any answer."""
        if not len(self):
            return []
        name = f"worker_clocks_core{core_id}.csv"
        c = np.frombuffer(self.rows, dtype=np.int64).reshape(-1, 5)
        np.savetxt(run_dir / name, c, fmt="%d", delimiter=",", header=HEAD, comments="")
        return [name]
