"""Per-request records and the statistics reports are made of. Times are perf_counter_ns."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .request import LLMRequest, LLMResponse

PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


class RequestLog:
    """What happened to each issued request: when issued, first token, final, tokens, core,
    error. Appends on the hot path; arrays are built only when asked."""

    def __init__(self) -> None:
        self.qid: list[int] = []
        self.sample: list[int] = []
        self.issue_ns: list[int] = []
        self.first_ns: list[int] = []
        self.final_ns: list[int] = []
        self.n_tokens: list[int] = []
        self.core: list[int] = []
        self.error: list[str] = []
        self._index: dict[int, int] = {}
        self.completed = 0
        self.failed = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.qid)

    def on_issue(self, requests: Sequence[LLMRequest]) -> None:
        with self._lock:
            base = len(self.qid)
            n = len(requests)
            self._index.update({r.request_id: base + i for i, r in enumerate(requests)})
            self.qid.extend(r.request_id for r in requests)
            self.sample.extend(r.sample_index for r in requests)
            self.issue_ns.extend(r.issue_ns for r in requests)
            zeros = [0] * n
            self.first_ns.extend(zeros)
            self.final_ns.extend(zeros)
            self.n_tokens.extend(zeros)
            self.core.extend(zeros)
            self.error.extend([""] * n)

    def on_responses(self, responses: Iterable[LLMResponse]) -> None:
        with self._lock:
            self._record(responses)

    def _record(self, responses: Iterable[LLMResponse]) -> None:
        index = self._index
        for r in responses:
            i = index.get(r.request_id)
            if i is None:
                continue
            if not r.is_final:
                if not self.first_ns[i]:
                    self.first_ns[i] = r.time_ns
                continue
            del index[r.request_id]
            self.final_ns[i] = r.time_ns
            self.core[i] = r.core_id
            if r.error is not None:
                self.error[i] = r.error
                self.failed += 1
            else:
                n = len(r.output_tokens)
                self.n_tokens[i] = n
                self.tokens += n
                self.completed += 1

    def has_first(self, query_id: int) -> bool:
        i = self._index.get(query_id)
        return i is not None and self.first_ns[i] != 0

    def recent_latencies(self, window: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of up to ``window`` recent finished requests (for progress)."""
        n = len(self.qid)
        lo = max(0, n - 4 * window)
        return _ttft_tpot(
            self.issue_ns[lo:n],
            self.first_ns[lo:n],
            self.final_ns[lo:n],
            self.n_tokens[lo:n],
            window,
        )

    def latencies(self) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of every successful request that has them."""
        return _ttft_tpot(self.issue_ns, self.first_ns, self.final_ns, self.n_tokens, None)

    def total_latencies(self) -> np.ndarray:
        """Issue to final (ns) of every successful request."""
        iss = np.asarray(self.issue_ns, dtype=np.int64)
        fin = np.asarray(self.final_ns, dtype=np.int64)
        ok = (fin > 0) & (np.asarray(self.n_tokens) > 0)
        return (fin - iss)[ok]

    def write_csv(self, path: str | Path, origin_ns: int = 0) -> None:
        """One row per request; times in ms relative to ``origin_ns``."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "query_id",
                    "sample_index",
                    "core",
                    "issue_ms",
                    "ttft_ms",
                    "latency_ms",
                    "tpot_ms",
                    "n_tokens",
                    "error",
                ]
            )
            for i in range(len(self.qid)):
                iss, first, fin, n = (
                    self.issue_ns[i],
                    self.first_ns[i],
                    self.final_ns[i],
                    self.n_tokens[i],
                )
                ttft = (first - iss) / 1e6 if first else ""
                lat = (fin - iss) / 1e6 if fin else ""
                tpot = (fin - first) / (n - 1) / 1e6 if first and fin and n > 1 else ""
                w.writerow(
                    [
                        self.qid[i],
                        self.sample[i],
                        self.core[i],
                        f"{(iss - origin_ns) / 1e6:.3f}",
                        _fmt(ttft),
                        _fmt(lat),
                        _fmt(tpot),
                        n,
                        self.error[i],
                    ]
                )


def _fmt(v: float | str) -> str:
    return v if isinstance(v, str) else f"{v:.3f}"


def _ttft_tpot(
    issue: Sequence[int],
    first: Sequence[int],
    final: Sequence[int],
    ntok: Sequence[int],
    window: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    iss = np.asarray(issue, dtype=np.int64)
    fst = np.asarray(first, dtype=np.int64)
    fin = np.asarray(final, dtype=np.int64)
    n = np.asarray(ntok, dtype=np.int64)
    has_first = fst > 0
    ttft = (fst - iss)[has_first]
    ok = has_first & (fin > 0) & (n > 1)
    tpot = (fin - fst)[ok] / (n[ok] - 1)
    if window is not None:
        ttft, tpot = ttft[-window:], tpot[-window:]
    return ttft, tpot


def percentiles(values: np.ndarray, ps: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": ..., "p99.9": ..., "mean": ...}``; empty dict when no values."""
    if len(values) == 0:
        return {}
    out = {f"p{p:g}": float(np.percentile(values, p)) for p in ps}
    out["mean"] = float(np.mean(values))
    out["max"] = float(np.max(values))
    return out
