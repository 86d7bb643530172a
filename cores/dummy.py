"""The dummy core: an engine model (``llmlib.model.engine``) run in real time.

It needs no GPU, model or server. Output tokens are the reference output when the sample
has one, else deterministic pseudo tokens of the sample's reference output length. First
tokens and finals are emitted at the model's times by one engine thread; the ``zero``
profile answers at once, in the caller's thread (a RequestBatch with a ResponseBatch), so
the harness's own overhead can be measured. ``dummy_fail_after`` makes the engine die after
that many requests, to exercise the failure path (every pending query completes as failed).

Disaggregated serving (``llmlib.serving.disagg``) runs dummy cores in two roles: ``prefill``
prefills each request (one step's worth of output) and answers with its final at once, the
whole answer in it, for the pool to hand on; ``decode`` takes requests prefilled elsewhere
with the time their KV cache lands (``enqueue_at``) and decodes the rest from then.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError, HealthCheckError
from llmlib.model.clock import Clock
from llmlib.model.engine import make_model, profile_from_config
from llmlib.model.pseudo_tokens import pseudo_tokens
from llmlib.serving.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.serving.prefix import blocks_of
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse, RequestBatch, ResponseBatch


@dataclass(frozen=True)
class DummySettings(Section):
    group: ClassVar[str] = "dummy"
    dummy_fail_after: int = setting(-1, "dummy core dies after this many requests (-1: never)")


@register_core("dummy")
class DummyCore(LLMCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True, batches=True)

    def __init__(
        self,
        core_id: int,
        cfg: Config,
        callback: CompletionCallback | None = None,
        clock: Clock | None = None,
        role: str = "both",
    ) -> None:
        super().__init__(core_id, cfg, callback)
        if role not in ("both", "prefill", "decode"):
            raise ValueError(f"dummy core role must be both, prefill or decode, not {role!r}")
        self.role = role
        self.profile = profile_from_config(cfg)
        if role != "both" and self.profile.is_zero:
            raise ConfigError("disaggregated dummy cores need a profile that takes time, not zero")
        self.clock = clock or Clock()
        self._seed, self._vocab = int(cfg.seed), int(cfg.vocab_size)
        self._fail_after = DummySettings.of(cfg).dummy_fail_after
        self._accepted = 0
        self._live: dict[int, tuple[LLMRequest, np.ndarray, np.ndarray]] = {}
        # sample index -> (tokens, first token, output_len, max_new_tokens, reference)
        self._token_cache: dict[int, tuple[Any, ...]] = {}
        self._block_cache: dict[int, tuple[Any, tuple[int, ...]]] = {}  # prefix cache
        self._inbox: list[tuple[LLMRequest, int]] = []
        self._due: dict[int, int] = {}  # decode role: request id -> when its KV cache lands
        self._landing: list[tuple[int, int, LLMRequest]] = []  # (lands, request id, request)
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        if not self.profile.is_zero:
            self._model = make_model(self.profile)
            self._thread = threading.Thread(target=self._run, name=f"dummy-{core_id}", daemon=True)
            self._thread.start()

    def _answer(self, req: LLMRequest) -> tuple[np.ndarray, np.ndarray]:
        """(output tokens, first-token view) for ``req``: the reference output when the
        sample has one, else deterministic pseudo tokens of its reference length."""
        hit = self._token_cache.get(req.sample_index)
        if (
            hit is None
            or hit[2] is not req.output_len
            or hit[3] is not req.max_new_tokens
            or hit[4] is not req.reference_tokens
        ):
            hit = self._fill(req)
        return hit[0], hit[1]

    def _fill(self, req: LLMRequest) -> tuple[Any, ...]:
        """Compute and cache ``req``'s answer per sample (LoadGen draws the same samples
        again and again). A cache hit needs the very same output length, cap and reference
        objects (the request builder hands out one set per sample); anything else misses
        and is recomputed, never answered wrongly."""
        if req.reference_tokens is not None:
            tokens = req.reference_tokens[: req.max_new_tokens]
        else:
            n = req.output_len if req.output_len is not None else req.max_new_tokens
            n = max(1, min(n, req.max_new_tokens))
            tokens = pseudo_tokens(self._seed, self._vocab, req.sample_index, n)
        entry = (tokens, tokens[:1], req.output_len, req.max_new_tokens, req.reference_tokens)
        self._token_cache[req.sample_index] = entry
        return entry

    def enqueue_at(self, requests: Sequence[LLMRequest], ready_ns: int) -> None:
        """Decode role: requests whose KV cache lands at ``ready_ns`` (perf_counter_ns);
        they join the engine's batch from then."""
        for r in requests:
            self._due[r.request_id] = ready_ns
        self.enqueue(requests)

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        if type(requests) is RequestBatch:
            if self._thread is None and not requests.stream and self._fail_after < 0:
                self._answer_batch(requests)
                return
            requests = requests.requests()
        if self._thread is None:
            self._answer_now(requests)
            return
        now = self.clock.now_ns()  # the engine has the request from now on
        if self._due:
            due = self._due
            entries = [(r, max(now, due.pop(r.request_id, now))) for r in requests]
        else:
            entries = [(r, now) for r in requests]
        with self._cond:
            self._inbox.extend(entries)
            self._cond.notify()

    def _answer_now(self, requests: Sequence[LLMRequest]) -> None:
        if self._fail_after >= 0:
            self._count(len(requests))
        now, cid, out = self.clock.now_ns(), self.core_id, []
        cache = self._token_cache
        for req in requests:
            # _answer's cache check, inlined: this loop is all the zero profile costs
            hit = cache.get(req.sample_index)
            if (
                hit is None
                or hit[2] is not req.output_len
                or hit[3] is not req.max_new_tokens
                or hit[4] is not req.reference_tokens
            ):
                hit = self._fill(req)
            if req.stream:
                out.append(LLMResponse(req.request_id, hit[1], False, now, cid))
            out.append(LLMResponse(req.request_id, hit[0], True, now, cid))
        self._deliver(out)

    def _answer_batch(self, batch: RequestBatch) -> None:
        """The zero profile's answer to a batch of non-streamed requests, as columns."""
        src, cache = batch.source, self._token_cache
        out_lens, refs, mnt = src.out_lens, src.refs, src.max_new_tokens
        outs: list[Any] = []
        add = outs.append
        for i in batch.sample_indices:
            hit = cache.get(i)  # the cache check of _answer_now, on the batch's columns
            if (
                hit is None
                or hit[2] is not out_lens[i]
                or hit[3] is not mnt
                or hit[4] is not refs[i]
            ):
                hit = self._fill(src.one(0, i, 0))
            add(hit[0])
        self._deliver_batch(
            ResponseBatch(batch.request_ids, outs, self.clock.now_ns(), self.core_id)
        )

    def _count(self, n: int) -> None:
        self._accepted += n
        if 0 <= self._fail_after < self._accepted:
            self._fail(f"injected failure after {self._fail_after} requests (dummy_fail_after)")
            raise RuntimeError("dummy core failed on purpose")

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._step(batch)
        except Exception as exc:  # the engine died: everything pending fails, nothing hangs
            if self._dead is None:
                self._fail(repr(exc))
            self._outlive_test()  # this thread completed queries: it must outlive the test

    def _next_batch(self) -> list[tuple[LLMRequest, int]] | None:
        """Wait for new requests or the model's next event; None when closing."""
        clock, cond = self.clock, self._cond
        with cond:
            while not self._closing:
                if self._inbox:
                    break
                wake = self._model.next_wakeup_ns()
                if self._landing and (wake is None or self._landing[0][0] < wake):
                    wake = self._landing[0][0]
                if wake is not None and wake <= clock.now_ns():
                    break
                clock.wait(cond, wake)
            if self._closing:
                return None
            batch, self._inbox = self._inbox, []
            return batch

    def _step(self, batch: list[tuple[LLMRequest, int]]) -> None:
        model, live = self._model, self._live
        if batch:
            self._count(len(batch))
        cached = self.profile.prefix_cache_blocks > 0
        role = self.role
        for req, arrival in batch:
            tokens, first = self._answer(req)
            live[req.request_id] = (req, tokens, first)
            if role == "decode":  # joins when its KV cache lands
                heapq.heappush(self._landing, (arrival, req.request_id, req))
                continue
            blocks = blocks_of(req, self._block_cache) if cached else ()
            n_out = 1 if role == "prefill" else len(tokens)
            model.submit(req.request_id, arrival, len(req.input_tokens), n_out, blocks)
        now = self.clock.now_ns()
        landing = self._landing
        while landing and landing[0][0] <= now:
            lands, rid, req = heapq.heappop(landing)
            model.submit_decode(rid, lands, len(live[rid][1]) - 1)
        events = model.advance(now)
        if not events:
            return
        t, cid, out = self.clock.now_ns(), self.core_id, []
        for _, rid, final in events:
            if final:
                out.append(LLMResponse(rid, live.pop(rid)[1], True, t, cid))
            elif (entry := live[rid])[0].stream and role == "both":
                out.append(LLMResponse(rid, entry[2], False, t, cid))
        self._deliver(out)

    def _health_check_impl(self) -> None:
        if self._thread is not None and not self._thread.is_alive():
            raise HealthCheckError("engine thread is not running")

    def _close_impl(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
