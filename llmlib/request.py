"""Requests and responses that travel between the SUT adapter, the server pool and the cores.

Times are ``time.perf_counter_ns()`` integers. Token arrays are ``numpy.uint32`` where the
core can produce them cheaply; any sequence of ints is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    """A first-token or final response, or a failure (``error`` set, ``is_final`` True).

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


def failed_response(request_id: int, error: str, time_ns: int, core_id: int = 0) -> LLMResponse:
    """The record for a request that failed: final, no tokens, error set."""
    return LLMResponse(request_id, _EMPTY, True, time_ns, core_id, error)


_EMPTY = np.zeros(0, dtype=np.uint32)
