"""LLMServer: a pool of cores behind one ``issue`` call, with a pluggable traffic policy."""

from __future__ import annotations

from collections.abc import Sequence

from .core import CompletionCallback, LLMCore
from .policies import TrafficPolicy
from .request import LLMRequest


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
        cores = self.cores
        if len(cores) == 1:
            self.issued[0] += len(requests)
            cores[0].enqueue(requests)
            return
        loads = [c.pending for c in cores]
        groups: list[list[LLMRequest]] = [[] for _ in cores]
        for req, i in zip(requests, self.policy.assign(requests, loads), strict=True):
            groups[i].append(req)
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
