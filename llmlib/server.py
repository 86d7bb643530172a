"""LLMServer: a pool of cores behind one ``issue`` call, with a pluggable traffic policy."""

from __future__ import annotations

from collections.abc import Sequence

from .core import CompletionCallback, LLMCore
from .policies import TrafficPolicy
from .request import LLMRequest, RequestBatch


class LLMServer:
    """Load-balances requests across ``cores`` with ``policy``; completions from every core
    go to one callback."""

    def __init__(self, cores: Sequence[LLMCore], policy: TrafficPolicy) -> None:
        if not cores:
            raise ValueError("LLMServer needs at least one core")
        self.cores = list(cores)
        self.policy = policy
        self.issued = [0] * len(self.cores)

    def set_callback(self, callback: CompletionCallback | None) -> None:
        for c in self.cores:
            c.callback = callback

    def issue(self, requests: Sequence[LLMRequest]) -> None:
        """Requests (a list, or a RequestBatch, split per core as a batch) to the cores."""
        cores = self.cores
        if len(cores) == 1:
            self.issued[0] += len(requests)
            cores[0].enqueue(requests)
            return
        loads = [c.pending for c in cores]
        assignment = self.policy.assign(requests, loads)
        groups: list[Sequence[LLMRequest]]
        if type(requests) is RequestBatch:  # split into one batch per core
            positions: list[list[int]] = [[] for _ in cores]
            for k, i in enumerate(assignment):
                positions[i].append(k)
            groups = [requests.subset(p) for p in positions]
        else:
            lists: list[list[LLMRequest]] = [[] for _ in cores]
            for req, i in zip(requests, assignment, strict=True):
                lists[i].append(req)
            groups = list(lists)
        for i, group in enumerate(groups):
            if group:
                self.issued[i] += len(group)
                cores[i].enqueue(group)

    @property
    def pending(self) -> int:
        return sum(c.pending for c in self.cores)

    def flush(self, timeout_s: float | None = None) -> bool:
        return all(c.flush(timeout_s) for c in self.cores)

    def close(self) -> None:
        for c in self.cores:
            c.close()
