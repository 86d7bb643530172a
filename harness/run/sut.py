"""LoadGen adapters: the SUT (issue_queries -> LLMServer) and the completion path back.

The completion path keeps LoadGen's token-latency contract: a streamed request gets
``FirstTokenComplete`` with its first token(s), then ``QuerySamplesComplete`` with all output
token ids (so the final data starts with the first-token data) and ``n_tokens`` equal to
their count. Responses ready together go to LoadGen in one call.
A failed request completes too (with the tokens it received before failing, if any), so
LoadGen never waits for it; the request log counts it. In a streamed run its ``n_tokens``
is at least 2 so LoadGen's TPOT stays meaningful (see ``_failed_token_counts``). Many
queries issued at once (Offline) travel as ``RequestBatch`` columns, and a core that
answers columns sends back a ``ResponseBatch``.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterable, Sequence
from itertools import accumulate, repeat, starmap
from operator import mul
from typing import Any, Protocol

import numpy as np

from llmlib.data.benchmarks import Dataset, RequestBuilder
from llmlib.serving.pool import Pool
from llmlib.serving.request import LLMResponse, ResponseBatch
from llmlib.serving.request_log import RequestLog

ISSUE_CHUNK = 1024  # queries per hand-off to the pool when LoadGen issues many at once


class CompletionSink(Protocol):
    """Where completions go: LoadGen, or a recorder in tests."""

    def first_token_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None: ...
    def query_samples_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None: ...


class LoadGenSink:
    """Completions to ``mlperf_loadgen``; items are (query id, data pointer, bytes, n_tokens)."""

    def __init__(self) -> None:
        import mlperf_loadgen as lg

        self._lg = lg
        self._resp = lg.QuerySampleResponse

    def first_token_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None:
        self._lg.FirstTokenComplete(list(starmap(self._resp, items)))

    def query_samples_complete(self, items: Iterable[tuple[int, int, int, int]]) -> None:
        self._lg.QuerySamplesComplete(list(starmap(self._resp, items)))


class HarnessSUT:
    """Builds LLMRequests from LoadGen's queries and completes LLMResponses back to it."""

    def __init__(
        self,
        server: Pool,
        dataset: Dataset,
        sink: CompletionSink,
        stream: bool,
        log: RequestLog,
        token_dtype: Any = np.uint32,
        count_failed_as_two: bool = True,
    ) -> None:
        self.server, self.dataset, self.sink, self.log = server, dataset, sink, log
        self.stream = stream
        # (a performance run's TPOT; an accuracy or compliance run is checked on its data)
        self.count_failed_as_two = count_failed_as_two
        self.dtype = np.dtype(token_dtype)
        self.builder = RequestBuilder(dataset, stream)
        server.set_callback(self.complete)

    # --- LoadGen -> cores -----------------------------------------------------------------
    def issue_queries(self, query_samples: Sequence[Any]) -> None:
        """Many queries go to the pool as RequestBatches of ``ISSUE_CHUNK``: an Offline test
        issues every query in one call, and chunks keep what is built for one hand-off
        small (and its memory reused) instead of millions of objects living at once."""
        log, server = self.log, self.server
        if len(query_samples) == 1:  # Server: one query per call, the common case
            q = query_samples[0]
            reqs = [self.builder.one(q.id, q.index, time.perf_counter_ns())]
            log.on_issue(reqs)
            server.issue(reqs)
            return
        build = self.builder.batch_from_queries
        for lo in range(0, len(query_samples), ISSUE_CHUNK):
            batch = build(query_samples[lo : lo + ISSUE_CHUNK], time.perf_counter_ns())
            log.on_issue(batch)
            server.issue(batch)

    def flush_queries(self) -> None:
        """LoadGen's flush: nothing is buffered on the way in."""

    # --- cores -> LoadGen -----------------------------------------------------------------
    def complete(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        if type(responses) is ResponseBatch:
            self._complete_batch(responses)
            return
        # Plain loops, not comprehensions: on Python 3.11 each comprehension is a function
        # call, and in Server most calls carry one or two responses.
        firsts: list[LLMResponse] = []
        finals: list[LLMResponse] = []
        failed = False
        for r in responses:  # type: ignore[union-attr]  # (a batch returned above: `type() is`)
            if r.is_final:
                finals.append(r)
                if r.error is not None:
                    failed = True
            else:
                firsts.append(r)
        # each ``keep`` holds the token data until its LoadGen call has returned
        if firsts:
            items, keep = self._pack(firsts)
            self.sink.first_token_complete(items)
        if finals:
            items, keep = self._pack(finals)
            if failed and self.stream:
                self._first_for_failures(finals, firsts)
                if self.count_failed_as_two:
                    items = _failed_token_counts(finals, items)
            self.sink.query_samples_complete(items)
        self.log.on_responses(responses)

    def _complete_batch(self, batch: ResponseBatch) -> None:
        """Final, successful responses as columns (a streamed request's first token went
        to LoadGen as an LLMResponse before, if it had one). Every output's data is copied
        back to back into one buffer (``bytes.join`` reads arrays through the buffer
        protocol, in C) and each response points into it."""
        outs, size = batch.outputs, self.dtype.itemsize
        ns = list(map(len, outs))
        try:
            buf = b"".join(outs)  # type: ignore[arg-type]
        except TypeError:  # lists of ints, or arrays that are not contiguous
            buf = b""
        if len(buf) != sum(ns) * size:  # (also: arrays of another width than the dtype's)
            buf = b"".join([np.asarray(t, dtype=self.dtype).tobytes() for t in outs])
        nbytes = list(map(mul, ns, repeat(size)))
        # each response's start; one more at the end (the buffer's end), which zip drops
        ptrs = accumulate(nbytes, initial=id(buf) + _BYTES_DATA_OFFSET)
        items = zip(batch.request_ids, ptrs, nbytes, ns, strict=False)
        self.sink.query_samples_complete(items)  # (buf lives through the call)
        self.log.on_responses(batch)

    def _first_for_failures(self, finals: list[LLMResponse], firsts: list[LLMResponse]) -> None:
        """A streamed request that fails before its first token still gets one (empty), so
        LoadGen's token-latency bookkeeping has both events."""
        sent = {r.request_id for r in firsts}
        missing = [
            r.request_id
            for r in finals
            if r.error is not None
            and r.request_id not in sent
            and not self.log.has_first(r.request_id)
        ]
        if missing:
            self.sink.first_token_complete([(q, 0, 0, 0) for q in missing])

    def _pack(self, responses: list[LLMResponse]) -> tuple[list[tuple[int, int, int, int]], list]:
        """(id, pointer, bytes, n_tokens) for each response, with the buffers holding their
        data (the caller keeps them alive through the LoadGen call)."""
        dtype, off = self.dtype, _BYTES_DATA_OFFSET
        items, keep = [], []
        for r in responses:
            t = r.output_tokens
            if type(t) is not np.ndarray or t.dtype is not dtype:
                t = np.asarray(t, dtype=dtype)
            b = t.tobytes()
            keep.append(b)  # (an empty one has a valid address too; LoadGen reads 0 bytes)
            items.append((r.request_id, id(b) + off, len(b), len(t)))
        return items, keep


def _failed_token_counts(
    finals: list[LLMResponse], items: list[tuple[int, int, int, int]]
) -> list[tuple[int, int, int, int]]:
    """A streamed request that failed completes with the tokens it received before the
    failure, counted as at least 2: LoadGen takes TPOT as (final - first token) /
    (n_tokens - 1) and turns an n_tokens of 0 or 1 into a negative TPOT (a failure then
    drags its percentiles below zero and its mean to ~1e16 ns). At 2, a request that failed
    after its first token counts the whole wait since then as one token's time (never
    flattering), and one that failed before it (its first token sent empty at the failure)
    adds a TPOT near 0. The run is INVALID either way; requests.csv names them. Only in a
    performance run: an accuracy or compliance run (TEST06 checks token_count against the
    data) gets the count of the tokens it has."""
    return [
        (q, p, b, 2) if r.error is not None and n < 2 else (q, p, b, n)
        for r, (q, p, b, n) in zip(finals, items, strict=True)
    ]


def _bytes_data_offset() -> int:
    """Where a ``bytes`` object's data starts, relative to ``id()`` (CPython: the object's
    address). Checked against ctypes' own view of the buffer; copying token ids with
    ``tobytes()`` and taking this address is ~20x cheaper than ``ndarray.ctypes.data``."""
    probe = bytes(range(1, 17))
    off = bytes.__basicsize__ - 1
    addr = ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value
    if addr != id(probe) + off or ctypes.string_at(id(probe) + off, len(probe)) != probe:
        raise RuntimeError("llmlib needs CPython (bytes data address check failed)")
    return off


_BYTES_DATA_OFFSET = _bytes_data_offset()
