"""LoadGen adapters: the SUT (issue_queries -> LLMServer) and the completion path back.

The completion path keeps LoadGen's token-latency contract: a streamed request gets
``FirstTokenComplete`` with its first token(s), then ``QuerySamplesComplete`` with all output
token ids (so the final data starts with the first-token data) and ``n_tokens`` equal to
their count. Responses ready together go to LoadGen in one call, in one contiguous buffer.
A failed request completes too (no data, ``n_tokens`` 0), so LoadGen never waits for it;
the request log counts it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from llmlib.metrics import RequestLog
from llmlib.request import LLMRequest, LLMResponse
from llmlib.server import LLMServer
from llmlib.workloads import Dataset


class CompletionSink(Protocol):
    """Where completions go: LoadGen, or a recorder in tests."""

    def first_token_complete(self, items: list[tuple[int, int, int, int]]) -> None: ...
    def query_samples_complete(self, items: list[tuple[int, int, int, int]]) -> None: ...


class LoadGenSink:
    """Completions to ``mlperf_loadgen``; items are (query id, data pointer, bytes, n_tokens)."""

    def __init__(self) -> None:
        import mlperf_loadgen as lg

        self._lg = lg
        self._resp = lg.QuerySampleResponse

    def first_token_complete(self, items: list[tuple[int, int, int, int]]) -> None:
        resp = self._resp
        self._lg.FirstTokenComplete([resp(q, p, b, n) for q, p, b, n in items])

    def query_samples_complete(self, items: list[tuple[int, int, int, int]]) -> None:
        resp = self._resp
        self._lg.QuerySamplesComplete([resp(q, p, b, n) for q, p, b, n in items])


class HarnessSUT:
    """Builds LLMRequests from LoadGen's queries and completes LLMResponses back to it."""

    def __init__(
        self,
        server: LLMServer,
        dataset: Dataset,
        sink: CompletionSink,
        stream: bool,
        log: RequestLog,
        token_dtype: Any = np.uint32,
    ) -> None:
        self.server, self.dataset, self.sink, self.log = server, dataset, sink, log
        self.stream = stream
        self.dtype = np.dtype(token_dtype)
        self._out_lens = (
            None
            if dataset.output_len(0) is None
            else [dataset.output_len(i) for i in range(len(dataset))]
        )
        server.set_callback(self.complete)

    # --- LoadGen -> cores -----------------------------------------------------------------
    def issue_queries(self, query_samples: Sequence[Any]) -> None:
        now = time.perf_counter_ns()
        ds, stream, mnt, out_lens = (
            self.dataset,
            self.stream,
            self.dataset.max_new_tokens,
            self._out_lens,
        )
        tokens, ref = ds.input_tokens, ds.reference_tokens
        reqs = [
            LLMRequest(
                q.id,
                q.index,
                tokens(q.index),
                mnt,
                stream,
                out_lens[q.index] if out_lens is not None else None,
                ref(q.index),
                now,
            )
            for q in query_samples
        ]
        self.log.on_issue(reqs)
        self.server.issue(reqs)

    def flush_queries(self) -> None:
        """LoadGen's flush: nothing is buffered on the way in."""

    # --- cores -> LoadGen -----------------------------------------------------------------
    def complete(self, responses: list[LLMResponse]) -> None:
        if not responses:
            return
        firsts = [r for r in responses if not r.is_final]
        finals = [r for r in responses if r.is_final] if firsts else responses
        if firsts:
            items, buf = self._pack(firsts)
            self.sink.first_token_complete(items)
        if finals:
            if self.stream:
                self._first_for_failures(finals, firsts)
            items, buf = self._pack(finals)
            self.sink.query_samples_complete(items)
        del buf  # the token data had to outlive the LoadGen calls above
        self.log.on_responses(responses)

    def _first_for_failures(self, finals: list[LLMResponse], firsts: list[LLMResponse]) -> None:
        """A streamed request that fails before its first token still gets one (empty), so
        LoadGen's token-latency bookkeeping has both events."""
        failed = [r.request_id for r in finals if r.error is not None]
        if not failed:
            return
        sent = {r.request_id for r in firsts}
        missing = [q for q in failed if q not in sent and not self.log.has_first(q)]
        if missing:
            self.sink.first_token_complete([(q, 0, 0, 0) for q in missing])

    def _pack(
        self, responses: list[LLMResponse]
    ) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
        """(id, pointer, bytes, n_tokens) for each response, with the one buffer holding all
        their data (the caller keeps it alive through the LoadGen call)."""
        arrays = [np.asarray(r.output_tokens, dtype=self.dtype) for r in responses]
        buf = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        base, size = buf.ctypes.data, self.dtype.itemsize
        items, off = [], 0
        for r, a in zip(responses, arrays, strict=True):
            n = len(a)
            items.append((r.request_id, base + off * size if n else 0, n * size, n))
            off += n
        return items, buf
