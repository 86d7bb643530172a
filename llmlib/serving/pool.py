"""LLMServer: a pool of cores behind one ``issue`` call, with a pluggable traffic policy.

The pool keeps a breaker over its cores (``llmlib.serving.health``): a core that is down
gets no more traffic, one that keeps failing rests and is probed; whatever the policy picks
among those goes to the usable core with the fewest pending instead."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

from llmlib.serving.core import CompletionCallback, LLMCore
from llmlib.serving.health import CoreHealth
from llmlib.serving.policies import TrafficPolicy
from llmlib.serving.request import LLMRequest, RequestBatch


class Pool(Protocol):
    """What the harness needs of a pool: ``LLMServer``, or ``PDServer`` (disaggregated)."""

    cores: list[LLMCore]
    issued: list[int]
    policy: TrafficPolicy

    def set_callback(self, callback: CompletionCallback | None) -> None: ...
    def warmup_mode(self) -> AbstractContextManager[None]: ...
    def issue(self, requests: Sequence[LLMRequest]) -> None: ...
    @property
    def pending(self) -> int: ...
    def flush(self, timeout_s: float | None = None) -> bool: ...
    def close(self) -> None: ...


class LLMServer:
    """Load-balances requests across ``cores`` with ``policy``; completions from every core
    go to one callback."""

    def __init__(self, cores: Sequence[LLMCore], policy: TrafficPolicy) -> None:
        if not cores:
            raise ValueError("LLMServer needs at least one core")
        self.cores = list(cores)
        self.policy = policy
        policy.bind([c.telemetry for c in self.cores])  # what telemetry-reading policies see
        if policy.uses_pending_ids:  # and which requests each core still holds
            policy.bind_pending([c.pending_ids for c in self.cores])
        self.issued = [0] * len(self.cores)
        self.health = CoreHealth(self.cores, policy.eject_after, policy.eject_s, policy.max_eject_s)

    def set_callback(self, callback: CompletionCallback | None) -> None:
        for c in self.cores:
            c.callback = callback

    @contextmanager
    def warmup_mode(self) -> Iterator[None]:
        """Every core in warmup mode: answers are not forwarded."""
        with ExitStack() as stack:
            for c in self.cores:
                stack.enter_context(c.warmup_mode())
            yield

    def issue(self, requests: Sequence[LLMRequest]) -> None:
        """Requests (a list, or a RequestBatch, split per core as a batch) to the cores."""
        cores = self.cores
        if len(cores) == 1:
            self.issued[0] += len(requests)
            cores[0].enqueue(requests)
            return
        loads = [c.pending for c in cores]
        if self.health.trouble:  # a core is down, resting or being probed
            assignment = self.health.assign(self.policy, requests, loads)
        else:
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
