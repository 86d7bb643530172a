"""Disaggregated serving: a prefill pool and a decode pool behind ``LLMServer``'s surface.

A request goes to a prefill core (chosen by the pool's policy); when its prefill is done
that core answers with the whole answer (the dummy core's ``prefill`` role), the first
token goes to the harness (streamed requests), the prompt's KV cache is sent over that
prefill core's link (``KVTransfer``: one transfer at a time per link, then a set-up
latency), and a decode core chosen by the decode pool's own policy takes the request with
the time its cache lands (``enqueue_at``) and sends the final. A one-token answer ends at
prefill. This is ``llmlib.model.simulator``'s disaggregated mode run in real time.

Nothing is lost: a failure in either pool is forwarded as the request's final; a request
between the pools when the server closes is completed as failed. The pools' telemetry is
what the coordinator measures: TTFT on the prefill core, TPOT on the decode core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from llmlib.serving.core import CompletionCallback, LLMCore
from llmlib.serving.health import CoreHealth
from llmlib.serving.kv_transfer import KVTransfer
from llmlib.serving.policies import TrafficPolicy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request import (
    LLMRequest,
    LLMResponse,
    RequestBatch,
    ResponseBatch,
    failed_response,
)


class DecodeCore(Protocol):
    def enqueue_at(self, requests: Sequence[LLMRequest], ready_ns: int) -> None: ...


class PDServer:
    """A prefill pool and a decode pool (see the module docstring); core ids must be the
    cores' positions: prefill cores first, then decode cores."""

    def __init__(
        self,
        prefill: Sequence[LLMCore],
        decode: Sequence[LLMCore],
        policy: TrafficPolicy,
        decode_policy: TrafficPolicy,
        transfer: KVTransfer,
    ) -> None:
        if not prefill or not decode:
            raise ValueError("PDServer needs at least one prefill and one decode core")
        self.cores = list(prefill) + list(decode)
        if [c.core_id for c in self.cores] != list(range(len(self.cores))):
            raise ValueError("PDServer: core ids must be 0.. in order, prefill cores first")
        self.prefill = LLMServer(prefill, policy)
        self.policy = policy
        self.decode = list(decode)
        self.decode_policy = decode_policy
        decode_policy.bind([c.telemetry for c in decode])
        if decode_policy.uses_pending_ids:
            decode_policy.bind_pending([c.pending_ids for c in decode])
        self.decode_health = CoreHealth(
            decode, decode_policy.eject_after, decode_policy.eject_s, decode_policy.max_eject_s
        )
        self.transfer = transfer
        self._n_pre = len(prefill)
        self._decode_issued = [0] * len(decode)
        self._link_free = [0] * len(prefill)
        self._reqs: dict[int, LLMRequest] = {}  # issued, not final
        self._first_ns: dict[int, int] = {}  # prefilled: when its first token came
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._callback: CompletionCallback | None = None
        self._warmup = False
        self.handed_over = 0
        for c in prefill:
            c.callback = self._on_prefill
        for c in decode:
            c.callback = self._on_decode

    @property
    def issued(self) -> list[int]:
        """Requests each core was given (prefill cores: all; decode cores: handed over)."""
        return self.prefill.issued + self._decode_issued

    @issued.setter
    def issued(self, value: list[int]) -> None:
        """(Reset after warmup: ``handed_over`` restarts with it.)"""
        self.prefill.issued = list(value[: self._n_pre])
        self._decode_issued = list(value[self._n_pre :])
        self.handed_over = sum(self._decode_issued)

    def set_callback(self, callback: CompletionCallback | None) -> None:
        self._callback = callback

    @contextmanager
    def warmup_mode(self) -> Iterator[None]:
        self._warmup = True
        try:
            yield
        finally:
            self._warmup = False

    def issue(self, requests: Sequence[LLMRequest]) -> None:
        if type(requests) is RequestBatch:
            requests = requests.requests()
        with self._lock:
            for r in requests:
                self._reqs[r.request_id] = r
        self.prefill.issue(requests)

    def _forward(self, out: list[LLMResponse]) -> None:
        if out and not self._warmup and self._callback is not None:
            self._callback(out)

    def _on_prefill(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        assert isinstance(responses, list)  # the dummy's prefill role answers with lists
        out: list[LLMResponse] = []
        hand: list[tuple[int, LLMRequest, int]] = []
        with self._lock:
            for r in responses:
                req = self._reqs.get(r.request_id)
                if not r.is_final or req is None:
                    continue
                p = r.core_id
                if r.error is None and req.stream:  # prefilled: the first token goes out
                    out.append(LLMResponse(r.request_id, r.output_tokens[:1], False, r.time_ns, p))
                if r.error is not None or len(r.output_tokens) <= 1:  # nothing to decode
                    del self._reqs[r.request_id]
                    out.append(r)
                    continue
                self.cores[p].telemetry.observe_ttft(r.time_ns - req.issue_ns)
                self._first_ns[r.request_id] = r.time_ns
                self._link_free[p], landed = self.transfer.landed_ns(
                    r.time_ns, self._link_free[p], len(req.input_tokens)
                )
                d = self.decode_health.assign(
                    self.decode_policy, [req], [c.pending for c in self.decode]
                )[0]
                self._decode_issued[d] += 1
                self.handed_over += 1
                hand.append((d, req, landed))
            self._notify()
        self._forward(out)
        for d, req, landed in hand:  # (outside the lock: a dead core fails them at once)
            core = self.decode[d]
            core.enqueue_at([req], landed)  # type: ignore[attr-defined]

    def _on_decode(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        assert isinstance(responses, list)
        out: list[LLMResponse] = []
        with self._lock:
            for r in responses:
                if not r.is_final or self._reqs.pop(r.request_id, None) is None:
                    continue
                t_first = self._first_ns.pop(r.request_id, None)
                n = len(r.output_tokens)
                if r.error is None and t_first is not None and n > 1:
                    self.cores[r.core_id].telemetry.observe_tpot((r.time_ns - t_first) / (n - 1))
                out.append(r)
            self._notify()
        self._forward(out)

    def _notify(self) -> None:  # (lock held)
        if not self._reqs:
            self._idle.notify_all()

    @property
    def pending(self) -> int:
        return len(self._reqs)

    def flush(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._reqs:
                left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Close both pools (what they hold fails through them); then fail what was
        between them."""
        try:
            self.prefill.close()
        finally:
            for c in self.decode:
                c.close()
        with self._lock:
            left = list(self._reqs)
            self._reqs.clear()
            self._first_ns.clear()
            self._notify()
        now = time.perf_counter_ns()
        self._forward(
            [failed_response(rid, "closed between prefill and decode", now, -1) for rid in left]
        )
