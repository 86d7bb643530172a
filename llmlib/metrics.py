"""Per-request records and the statistics reports are made of. Times are perf_counter_ns."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .request import LLMRequest, LLMResponse, RequestBatch, ResponseBatch

PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


class RequestLog:
    """What happened to each issued request: when issued, first token, final, tokens, core,
    error.

    The request path only appends the request and response objects it already has (one
    ``list.extend`` each, or one ``append`` of a batch, atomic under the GIL, no lock);
    ``sync()`` folds them into per-request columns, off the request path: the progress bar's
    thread when one is shown, otherwise the first reader after the run. (Folding does not
    save memory: the columns hold about as much per request as the objects, ~200 bytes.)"""

    def __init__(self) -> None:
        self._issued: list[LLMRequest | RequestBatch] = []
        self._responses: list[LLMResponse | ResponseBatch] = []
        self._qid: list[int] = []
        self._sample: list[int] = []
        self._issue_ns: list[int] = []
        self._first_ns: list[int] = []
        self._final_ns: list[int] = []
        self._n_tokens: list[int] = []
        self._core: list[int] = []
        self._error: list[str] = []
        self._partial: dict[int, int] = {}  # failed row -> tokens it received before failing
        self._index: dict[int, int] = {}
        self._completed = 0
        self._failed = 0
        self._tokens = 0
        self._lock = threading.Lock()

    # --- the request path: appends only ---------------------------------------------------
    def on_issue(self, requests: Sequence[LLMRequest]) -> None:
        if type(requests) is RequestBatch:
            self._issued.append(requests)
        else:
            self._issued.extend(requests)

    def on_responses(self, responses: Iterable[LLMResponse] | ResponseBatch) -> None:
        if isinstance(responses, ResponseBatch):  # (one call per batch or Server response)
            self._responses.append(responses)
        else:
            self._responses.extend(responses)

    # --- folding into columns -------------------------------------------------------------
    def sync(self) -> None:
        """Fold what the request path appended into the columns (requests first, so every
        response finds its row)."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """The body of ``sync``; the caller holds the lock."""
        issued, responses = self._issued, self._responses
        # count responses before requests: a request is appended before it is sent, so
        # every response counted here finds its request among those folded below
        n_resp = len(responses)
        n = len(issued)
        if n:
            taken = issued[:n]
            del issued[:n]  # only this (locked) side removes; appends land after
            qids: list[int] = []
            samples: list[int] = []
            issue_ns: list[int] = []
            for x in taken:
                if isinstance(x, RequestBatch):
                    qids += x.request_ids
                    samples += x.sample_indices
                    issue_ns += [x.issue_ns] * len(x.request_ids)
                else:
                    qids.append(x.request_id)
                    samples.append(x.sample_index)
                    issue_ns.append(x.issue_ns)
            n = len(qids)
            base = len(self._qid)
            self._index.update(zip(qids, range(base, base + n), strict=True))
            self._qid += qids
            self._sample += samples
            self._issue_ns += issue_ns
            zeros = [0] * n
            self._first_ns += zeros
            self._final_ns += zeros
            self._n_tokens += zeros
            self._core += zeros
            self._error += [""] * n
        if n_resp:
            done = responses[:n_resp]
            del responses[:n_resp]
            self._record(done)

    def _record(self, responses: Iterable[LLMResponse | ResponseBatch]) -> None:
        index, first_ns = self._index, self._first_ns
        for r in responses:
            if isinstance(r, ResponseBatch):
                self._record_batch(r)
                continue
            i = index.get(r.request_id)
            if i is None:
                continue
            if not r.is_final:
                if not first_ns[i]:
                    first_ns[i] = r.time_ns
                continue
            del index[r.request_id]
            self._final_ns[i] = r.time_ns
            self._core[i] = r.core_id
            if r.error is not None:
                self._error[i] = r.error
                self._failed += 1
                if len(r.output_tokens):
                    self._partial[i] = len(r.output_tokens)
            else:
                n = len(r.output_tokens)
                self._n_tokens[i] = n
                self._tokens += n
                self._completed += 1

    def _record_batch(self, b: ResponseBatch) -> None:
        index, final_ns, core, n_tokens = self._index, self._final_ns, self._core, self._n_tokens
        t, c = b.time_ns, b.core_id
        for rid, out in zip(b.request_ids, b.outputs, strict=True):
            i = index.pop(rid, None)
            if i is None:
                continue
            final_ns[i] = t
            core[i] = c
            n_tokens[i] = n = len(out)
            self._tokens += n
            self._completed += 1

    def __len__(self) -> int:
        self.sync()
        return len(self._qid)

    @property
    def completed(self) -> int:
        self.sync()
        return self._completed

    @property
    def failed(self) -> int:
        self.sync()
        return self._failed

    @property
    def tokens(self) -> int:
        self.sync()
        return self._tokens

    def column(self, name: str) -> list:
        """One per-request column (qid, sample, issue_ns, first_ns, final_ns, n_tokens,
        core, error), in issue order."""
        self.sync()
        return list(getattr(self, f"_{name}"))

    def failed_after_first_token(self) -> int:
        """Failed requests that had had their first token (LoadGen got the tokens they had
        received, counted as at least 2; requests.csv: an error with a ttft)."""
        self.sync()
        return sum(1 for f, e in zip(self._first_ns, self._error, strict=True) if f and e)

    def has_first(self, query_id: int) -> bool:
        """Whether an open (not yet final) request has had its first token recorded."""
        with self._lock:
            self._fold()
            i = self._index.get(query_id)
            return i is not None and self._first_ns[i] != 0

    def _times(self, lo: int = 0) -> tuple[list[int], list[int], list[int], list[int]]:
        """Issue, first, final and n_tokens columns from row ``lo`` (negative: from the end),
        taken together after a sync."""
        with self._lock:
            self._fold()
            n = len(self._qid)
            lo = max(0, n + lo) if lo < 0 else lo
            return (
                self._issue_ns[lo:n],
                self._first_ns[lo:n],
                self._final_ns[lo:n],
                self._n_tokens[lo:n],
            )

    def recent_latencies(self, window: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of up to ``window`` recent finished requests (for progress)."""
        return _ttft_tpot(*self._times(-4 * window), window)

    def latencies(self) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of every successful request that has them."""
        return _ttft_tpot(*self._times(), None)

    def total_latencies(self) -> np.ndarray:
        """Issue to final (ns) of every successful request."""
        issue, _, final, ntok = self._times()
        iss = np.asarray(issue, dtype=np.int64)
        fin = np.asarray(final, dtype=np.int64)
        ok = (fin > 0) & (np.asarray(ntok) > 0)
        return (fin - iss)[ok]

    def write_csv(self, path: str | Path, origin_ns: int = 0) -> dict[str, int]:
        """One row per request; times in ms relative to ``origin_ns``. Returns what the rows
        hold (issued, completed, failed): the same snapshot, while requests may still come
        in (an interrupted run)."""
        self.sync()
        counts = {"issued": 0, "completed": 0, "failed": 0}
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
                    "tokens_before_failure",
                ]
            )
            for i in range(len(self._qid)):
                iss, first, fin, n = (
                    self._issue_ns[i],
                    self._first_ns[i],
                    self._final_ns[i],
                    self._n_tokens[i],
                )
                ttft = (first - iss) / 1e6 if first else ""
                lat = (fin - iss) / 1e6 if fin else ""
                tpot = (fin - first) / (n - 1) / 1e6 if first and fin and n > 1 else ""
                counts["issued"] += 1
                if self._error[i]:
                    counts["failed"] += 1
                elif fin:
                    counts["completed"] += 1
                w.writerow(
                    [
                        self._qid[i],
                        self._sample[i],
                        self._core[i],
                        f"{(iss - origin_ns) / 1e6:.3f}",
                        _fmt(ttft),
                        _fmt(lat),
                        _fmt(tpot),
                        n,
                        self._error[i],
                        self._partial.get(i, 0) if self._error[i] else "",
                    ]
                )
        return counts


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
