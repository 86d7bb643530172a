"""``python -m harness serve``: llmlib's own OpenAI-compatible serving front over any core.

A real HTTP server (aiohttp) on 127.0.0.1 that answers what OpenAI-compatible clients send,
with any registered core behind it (the ``dummy`` core's engine model by default, so first
tokens and finals come at modelled times). It is what the endpoint core's tests run against
when no heavier server is wanted, and a stand-in server for trying a client setup.

- ``POST /v1/completions``: ``prompt`` as text (needs ``--tokenizer_path``) or token ids;
  ``max_tokens``; ``stream`` (SSE, ``data: [DONE]`` at the end); ``stream_options.
  include_usage``; ``return_token_ids`` adds ``token_ids`` (the chunk's new tokens) to each
  choice, as vLLM does (``--no_token_ids``: ignored, as a text-only server would).
- ``POST /v1/chat/completions``: ``messages`` rendered as ``role: content`` lines and
  tokenized (needs a tokenizer); the same options; ``delta.content`` chunks.
- ``POST /generate`` and ``POST /loglikelihood``: the batch API (``harness.serve.batch``),
  its schemas in pydantic (``harness.serve.schemas``), published at ``GET /openapi.json``.
- ``GET /health``, ``/healthz`` (up), ``/readyz`` (model loaded, not draining),
  ``GET /v1/models``, ``GET /metrics`` (prometheus-client: TTFT and TPOT histograms
  measured from the request's arrival, request counters by outcome, refusals by reason,
  requests in flight).
- Keys, rate limits, admission, body limits, timeouts and draining on SIGTERM:
  ``harness.serve.guard``; settings by flags over ``$LLMLIB_SERVE_*`` over ``--config``
  YAML (``harness.serve.options``). Harness flags for the core go after ``--`` (``python -m
  harness serve --core_type vllm -- --vllm_engine_flags=model:build/tiny-model``).

A chunk carries every token the core produced since the last one (the dummy core gives the
first token, then the rest at the end): clients must not count one token per chunk. Without a
tokenizer the text of token ``t`` is ``<t>``.

``--reasoning_tokens N`` makes it answer as a reasoning model does: the first N output tokens
of each answer are reasoning, sent as ``delta.reasoning_content`` on the chat API (as vLLM's
reasoning parsers send it) and, on the completions API, as text that ends with ``</think>``
(as DeepSeek-R1 writes it; the token ids are the model's own); a chunk that holds both is
split in two at the boundary.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import zlib
from typing import Any

import numpy as np

from llmlib.errors import LLMLibError, MissingDependencyError

try:  # the http extra: one line, not a traceback, where it is missing
    from pydantic import ValidationError

    from harness.serve import batch, routes
    from harness.serve.guard import Guard, Limits
    from harness.serve.metrics import FrontMetrics
    from harness.serve.routes import Routes
    from harness.serve.schemas import (
        ChatCompletionRequest,
        CompletionRequest,
        first_error,
        openapi,
    )
except ImportError as _exc:
    raise MissingDependencyError(
        f"the serving front needs {_exc.name}: pip install -e .[http]"
    ) from None
from llmlib.config.settings import Config
from llmlib.data.tokenizer import Tokenizer
from llmlib.serving.core import LLMCore
from llmlib.serving.registry import get_core_class
from llmlib.serving.request import LLMRequest, LLMResponse, ResponseBatch


class BadRequest(Exception):
    pass


class ServingFront:
    """The app: HTTP requests in, LLMRequests to one core, its responses out as SSE."""

    def __init__(
        self,
        cfg: Config,
        tokenizer: Tokenizer | None,
        model: str,
        token_ids: bool = True,
        reasoning_tokens: int = 0,
        limits: Limits | None = None,
    ) -> None:
        self.cfg, self.tok, self.model = cfg, tokenizer, model
        self.limits = limits or Limits()
        self.drain_s = 30.0
        self.metrics = FrontMetrics(model)
        self.guard = Guard(self.limits, reject=lambda why: self.metrics.rejected[why].inc())
        self.token_ids = token_ids  # honour return_token_ids (off: a text-only server)
        self.reasoning_tokens = reasoning_tokens  # leading output tokens that are reasoning
        self.per_token = False  # stream one SSE event a token (else one a core answer)
        cls = get_core_class(cfg.core_type)
        self.core: LLMCore = cls(0, cls.config_for_core(0, cfg), self._on_responses)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: dict[int, asyncio.Queue[LLMResponse]] = {}
        self.ids = itertools.count(1)
        self.ttft, self.counts = self.metrics.ttft, self.metrics.outcome
        self.routes = Routes(self)
        self.vocab = tokenizer.vocab_size if tokenizer else int(getattr(self.core, "vocab", 0))

    # --- core -> requests waiting in handlers ---------------------------------------------
    def _on_responses(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        if isinstance(responses, ResponseBatch):  # (a core answering columns)
            responses = responses.responses()
        if self.loop is not None:  # from the core's thread (or this loop's, zero profile)
            self.loop.call_soon_threadsafe(self._dispatch, responses)

    def _dispatch(self, responses: list[LLMResponse]) -> None:
        for r in responses:
            q = self.queues.get(r.request_id)
            if q is not None:
                q.put_nowait(r)

    def _submit(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        extra: dict[str, Any] | None = None,
        stream: bool = True,
    ) -> tuple[int, asyncio.Queue]:
        rid = next(self.ids)
        q: asyncio.Queue[LLMResponse] = asyncio.Queue()
        self.queues[rid] = q
        arr = np.asarray(prompt_ids, dtype=np.uint32)
        sample = zlib.crc32(arr.tobytes()) % 4096  # same prompt, same answer (bounded cache)
        now = time.perf_counter_ns()
        req = LLMRequest(rid, sample, arr, max_tokens, stream, None, None, now, extra)
        self.core.enqueue([req])
        return rid, q

    async def _final(self, q: asyncio.Queue[LLMResponse]) -> LLMResponse:
        while not (r := await q.get()).is_final:
            pass
        return r

    # --- request parsing ------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        if self.tok is None:
            raise BadRequest("text prompts need a tokenizer: start with --tokenizer_path")
        return self.tok.encode(text)

    def _text(self, ids: np.ndarray) -> str:
        if self.tok is None:
            return "".join(f"<{int(t)}>" for t in ids)
        return self.tok.decode(ids)

    def _prompt(self, req: CompletionRequest | ChatCompletionRequest) -> list[int]:
        if isinstance(req, ChatCompletionRequest):
            lines = [f"{m.role}: {m.content or ''}" for m in req.messages]
            return self._encode("\n".join(lines) + "\nassistant:")
        if isinstance(req.prompt, str):
            return self._encode(req.prompt)
        if self.vocab and max(req.prompt) >= self.vocab:
            raise BadRequest(
                f"prompt: token id {max(req.prompt)} is not below the vocabulary's {self.vocab}"
            )
        return req.prompt

    # --- handlers -------------------------------------------------------------------------
    async def completions(self, request: Any) -> Any:
        return await self._generate(request, chat=False)

    async def chat(self, request: Any) -> Any:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Any, chat: bool) -> Any:
        from aiohttp import web

        arrived = time.perf_counter()
        try:
            kind = ChatCompletionRequest if chat else CompletionRequest
            try:
                req = kind.model_validate_json(await request.read())
            except ValidationError as exc:
                raise BadRequest(first_error(exc)) from None
            body = req.model_dump()
            prompt, max_tokens = self._prompt(req), req.tokens()
            if max_tokens > self.limits.max_tokens:
                cap = self.limits.max_tokens
                raise BadRequest(f"max_tokens: {max_tokens}, over this server's cap of {cap}")
            if len(prompt) > self.limits.max_prompt_tokens:
                msg = f"the prompt is {len(prompt)} tokens, over the limit of "
                raise batch.ApiError(413, msg + str(self.limits.max_prompt_tokens), "too_large")
        except batch.ApiError as exc:
            return batch._error(self, exc)
        except BadRequest as exc:
            self.metrics.rejected["invalid"].inc()
            return web.json_response({"error": {"message": str(exc), "code": 400}}, status=400)
        rid, q = self._submit(prompt, max_tokens, req.sampling())
        try:
            if req.stream:
                return await self._stream(request, body, chat, rid, q, len(prompt), arrived)
            return await self._whole(body, chat, rid, q, len(prompt), arrived)
        except (ConnectionResetError, asyncio.CancelledError):
            self.counts["aborted"].inc()
            raise
        finally:
            self.queues.pop(rid, None)

    async def _whole(
        self, body: dict, chat: bool, rid: int, q: asyncio.Queue, n_in: int, arrived: float
    ) -> Any:
        from aiohttp import web

        first = None
        while True:
            r = await q.get()
            if not r.is_final:
                first = time.perf_counter()
                self.ttft.observe(first - arrived)
                continue
            if r.error is not None:
                self.counts["failed"].inc()
                err = {"error": {"message": r.error, "code": 500}}
                return web.json_response(err, status=500, headers=self.routes.headers([rid]))
            self.counts["success"].inc()
            toks = np.asarray(r.output_tokens)
            self._observe_end(first, len(toks))
            choice = self._choice(chat, toks, body, "length", whole=True)
            n = self.reasoning_tokens
            if n and chat:
                choice["message"]["reasoning_content"] = self._text(toks[:n])
                choice["message"]["content"] = self._text(toks[n:]) if len(toks) > n else ""
            elif n:
                choice["text"] = self._text(toks[:n]) + "</think>" + self._text(toks[n:])
            out = self._envelope(rid, chat, [choice], n_in, len(toks))
            return web.json_response(out, headers=self.routes.headers([rid]))

    async def _stream(
        self,
        request: Any,
        body: dict,
        chat: bool,
        rid: int,
        q: asyncio.Queue,
        n_in: int,
        arrived: float,
    ) -> Any:
        from aiohttp import web

        r = await q.get()  # headers go with the first answer: by then any fallback is known
        headers = {"Content-Type": "text/event-stream", **self.routes.headers([rid])}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        sent, first, got = 0, None, True
        while True:
            if not got:
                r = await q.get()
            got = False
            if r.error is not None:
                self.counts["failed"].inc()
                await _sse(resp, {"error": {"message": r.error, "code": 500}})
                break
            toks = np.asarray(r.output_tokens)
            if len(toks) > sent:
                n = self.reasoning_tokens
                cuts = [sent, min(max(n, sent), len(toks)), len(toks)] if n else [sent, len(toks)]
                if self.per_token:  # one event a token, as engines stream
                    cuts = sorted(set(cuts) | set(range(sent, len(toks))))
                for a, b in itertools.pairwise(cuts):
                    if b > a:
                        kind = "reasoning" if a < n else "answer"
                        closes = kind == "reasoning" and b == n
                        choice = self._choice(
                            chat, toks[a:b], body, None, first=a == 0, kind=kind, closes=closes
                        )
                        await _sse(resp, self._envelope(rid, chat, [choice]))
                if sent == 0:
                    first = time.perf_counter()
                    self.ttft.observe(first - arrived)
                sent = len(toks)
            if r.is_final:
                self.counts["success"].inc()
                self._observe_end(first, sent)
                end = self._choice(chat, toks[:0], body, "length")
                await _sse(resp, self._envelope(rid, chat, [end]))
                if (body.get("stream_options") or {}).get("include_usage"):
                    await _sse(resp, self._envelope(rid, chat, [], n_in, sent))
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _observe_end(self, first: float | None, n: int) -> None:
        self.metrics.generated.inc(n)
        if first is not None and n > 1:
            self.metrics.tpot.observe((time.perf_counter() - first) / (n - 1))

    def _choice(
        self,
        chat: bool,
        toks: np.ndarray,
        body: dict,
        finish: str | None,
        first: bool = False,
        whole: bool = False,
        kind: str = "answer",
        closes: bool = False,
    ) -> dict[str, Any]:
        """One choice; ``kind`` reasoning sends the text as ``reasoning_content`` (chat) or
        ends it with ``</think>`` when ``closes`` (completions)."""
        text = self._text(toks) if len(toks) else ""
        c: dict[str, Any] = {"index": 0, "finish_reason": finish}
        field = "reasoning_content" if kind == "reasoning" else "content"
        if not chat:
            c |= {"text": text + ("</think>" if closes else ""), "logprobs": None}
        elif whole:
            c["message"] = {"role": "assistant", "content": text}
        else:
            c["delta"] = {"role": "assistant", field: text} if first else {field: text}
        if self.token_ids and body.get("return_token_ids"):
            c["token_ids"] = [int(t) for t in toks]
        return c

    def _envelope(
        self, rid: int, chat: bool, choices: list, n_in: int | None = None, n_out: int | None = None
    ) -> dict[str, Any]:
        obj = "chat.completion.chunk" if n_in is None else "chat.completion"
        if not chat:
            obj = "text_completion"
        out = {
            "id": f"cmpl-{rid}",
            "object": obj,
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }
        if n_out is not None and n_in is not None:
            out["usage"] = {
                "prompt_tokens": n_in,
                "completion_tokens": n_out,
                "total_tokens": n_in + n_out,
            }
        return out

    async def health(self, request: Any) -> Any:
        from aiohttp import web

        try:
            self.core.run_health_check()
        except LLMLibError as exc:
            return web.json_response({"status": str(exc)}, status=503)
        return web.json_response({"status": "ok"})

    async def models(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "owned_by": "llmlib"}],
            }
        )

    async def metrics_page(self, request: Any) -> Any:
        from aiohttp import web

        self.metrics.in_flight.set(self.guard.in_flight)
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    async def openapi_page(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(openapi("llmlib serving front", "1"))

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self.guard.middleware()]
        )
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/generate", lambda r: batch.generate(self, r))
        app.router.add_post("/loglikelihood", lambda r: batch.loglikelihood(self, r))
        app.router.add_get("/health", self.health)
        app.router.add_get("/healthz", lambda r: batch.healthz(self, r))
        app.router.add_get("/readyz", lambda r: batch.readyz(self, r))
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/openapi.json", self.openapi_page)
        app.router.add_post("/route", lambda r: routes.route(self, r))
        app.router.add_get("/experts", lambda r: routes.experts(self, r))
        return app


async def _sse(resp: Any, obj: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
