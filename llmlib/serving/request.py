"""Requests and responses that travel between the SUT adapter, the server pool and the cores.

Times are ``time.perf_counter_ns()`` integers. Token arrays are ``numpy.uint32`` where the
core can produce them cheaply; any sequence of ints is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import numpy as np

TokenIds = np.ndarray | Sequence[int]


@dataclass(slots=True)
class LLMRequest:
    """One query for a core.

    ``request_id`` is LoadGen's query id (or a warmup id). ``output_len`` is the reference
    output length when the dataset has one (the dummy core uses it; real backends ignore it),
    ``reference_tokens`` the reference output token ids when present. ``extra`` carries
    backend-specific options (None when there are none: a dict per request costs time).
    """

    request_id: int
    sample_index: int
    input_tokens: TokenIds
    max_new_tokens: int
    stream: bool = False
    output_len: int | None = None
    reference_tokens: np.ndarray | None = None
    issue_ns: int = 0
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class LLMResponse:
    """A first-token or final response, or a failure (``error`` set, ``is_final`` True;
    ``output_tokens`` then holds what was received before the failure, often nothing).

    A final response carries *all* output tokens (the first-token tokens included), so the
    final data starts with the first-token data (TEST06).
    """

    request_id: int
    output_tokens: TokenIds
    is_final: bool
    time_ns: int
    core_id: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchSource(Protocol):
    """Where a RequestBatch's per-sample fields come from (``workloads.RequestBuilder``)."""

    stream: bool
    max_new_tokens: int
    inputs: list[Any]
    out_lens: list[int | None]
    refs: list[np.ndarray | None]

    def one(self, request_id: int, index: int, issue_ns: int) -> LLMRequest: ...


@dataclass(slots=True)
class RequestBatch(Sequence[LLMRequest]):
    """Requests issued together, as columns: LoadGen's Offline test issues every query in
    one call, and per-request objects are then most of the harness's cost.

    A batch is a sequence of ``LLMRequest`` (built on access), so any core and any traffic
    policy can take one as it takes a list; a core that answers columns (the dummy's
    ``zero`` profile) reads ``request_ids``, ``sample_indices`` and ``source``'s per-sample
    lists directly. Every request in a batch has the same ``issue_ns``."""

    request_ids: list[int]
    sample_indices: list[int]
    issue_ns: int
    source: BatchSource

    def __len__(self) -> int:
        return len(self.request_ids)

    @overload
    def __getitem__(self, k: int) -> LLMRequest: ...
    @overload
    def __getitem__(self, k: slice) -> RequestBatch: ...
    def __getitem__(self, k: int | slice) -> LLMRequest | RequestBatch:
        if isinstance(k, slice):
            return self.subset(range(len(self))[k])
        return self.source.one(self.request_ids[k], self.sample_indices[k], self.issue_ns)

    def __iter__(self) -> Iterator[LLMRequest]:
        one, t = self.source.one, self.issue_ns
        for q, i in zip(self.request_ids, self.sample_indices, strict=True):
            yield one(q, i, t)

    @property
    def stream(self) -> bool:
        return self.source.stream

    def requests(self) -> list[LLMRequest]:
        return list(self)

    def subset(self, positions: Sequence[int]) -> RequestBatch:
        """The batch of the requests at ``positions``."""
        ids, idx = self.request_ids, self.sample_indices
        return RequestBatch(
            [ids[k] for k in positions], [idx[k] for k in positions], self.issue_ns, self.source
        )


@dataclass(slots=True)
class ResponseBatch:
    """Final, successful responses produced together, as columns (what a core that takes
    ``RequestBatch`` columns gives back). Failures are always ``LLMResponse``s."""

    request_ids: list[int]
    outputs: list[TokenIds]
    time_ns: int
    core_id: int = 0

    def __len__(self) -> int:
        return len(self.request_ids)

    def responses(self) -> list[LLMResponse]:
        t, c = self.time_ns, self.core_id
        return [
            LLMResponse(q, o, True, t, c)
            for q, o in zip(self.request_ids, self.outputs, strict=True)
        ]


def failed_response(
    request_id: int, error: str, time_ns: int, core_id: int = 0, tokens: TokenIds | None = None
) -> LLMResponse:
    """The record for a request that failed: final, error set, with the output tokens it
    had received before the failure when the core knows them (else none)."""
    return LLMResponse(request_id, _EMPTY if tokens is None else tokens, True, time_ns, core_id,
                       error)  # fmt: skip


_EMPTY = np.zeros(0, dtype=np.uint32)
