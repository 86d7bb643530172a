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
- ``GET /health``, ``GET /v1/models``, ``GET /metrics`` (Prometheus text:
  ``llmlib:time_to_first_token_seconds`` histogram measured from the request's arrival to
  its first token written, and request counters).

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

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time
import zlib
from typing import Any

import numpy as np

from llmlib.config.settings import Config, resolve
from llmlib.data.tokenizer import Tokenizer, load_tokenizer
from llmlib.errors import LLMLibError
from llmlib.serving.core import LLMCore
from llmlib.serving.registry import get_core_class
from llmlib.serving.request import LLMRequest, LLMResponse, ResponseBatch

TTFT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
TTFT_BUCKETS += (7.5, 10.0, 20.0, 40.0, 80.0)


class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count)."""

    def __init__(self, name: str, buckets: tuple[float, ...]) -> None:
        self.name, self.buckets = name, buckets
        self.counts = [0] * len(buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.sum += v
        self.count += 1

    def render(self, labels: str) -> list[str]:
        lines = [f"# TYPE {self.name} histogram"]
        for b, c in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{{labels},le="{b}"}} {c}')
        lines.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum{{{labels}}} {self.sum}")
        lines.append(f"{self.name}_count{{{labels}}} {self.count}")
        return lines


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
    ) -> None:
        self.cfg, self.tok, self.model = cfg, tokenizer, model
        self.token_ids = token_ids  # honour return_token_ids (off: a text-only server)
        self.reasoning_tokens = reasoning_tokens  # leading output tokens that are reasoning
        cls = get_core_class(cfg.core_type)
        self.core: LLMCore = cls(0, cls.config_for_core(0, cfg), self._on_responses)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: dict[int, asyncio.Queue[LLMResponse]] = {}
        self.ids = itertools.count(1)
        self.ttft = Histogram("llmlib:time_to_first_token_seconds", TTFT_BUCKETS)
        self.counts = {"success": 0, "failed": 0, "aborted": 0}

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

    def _submit(self, prompt_ids: list[int], max_tokens: int) -> tuple[int, asyncio.Queue]:
        rid = next(self.ids)
        q: asyncio.Queue[LLMResponse] = asyncio.Queue()
        self.queues[rid] = q
        arr = np.asarray(prompt_ids, dtype=np.uint32)
        sample = zlib.crc32(arr.tobytes()) % 4096  # same prompt, same answer (bounded cache)
        req = LLMRequest(rid, sample, arr, max_tokens, True, None, None, time.perf_counter_ns())
        self.core.enqueue([req])
        return rid, q

    # --- request parsing ------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        if self.tok is None:
            raise BadRequest("text prompts need a tokenizer: start with --tokenizer_path")
        return self.tok.encode(text)

    def _text(self, ids: np.ndarray) -> str:
        if self.tok is None:
            return "".join(f"<{int(t)}>" for t in ids)
        return self.tok.decode(ids)

    def _prompt(self, body: dict[str, Any], chat: bool) -> list[int]:
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise BadRequest("'messages' must be a non-empty list")
            lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in msgs]
            return self._encode("\n".join(lines) + "\nassistant:")
        p = body.get("prompt")
        if isinstance(p, str):
            return self._encode(p)
        if isinstance(p, list) and p and all(isinstance(t, int) for t in p):
            return p
        raise BadRequest("'prompt' must be a string or a non-empty list of token ids")

    def _max_tokens(self, body: dict[str, Any]) -> int:
        n = body.get("max_completion_tokens", body.get("max_tokens", 16))
        if not isinstance(n, int) or n < 1:
            raise BadRequest(f"'max_tokens' must be a positive integer, got {n!r}")
        return n

    # --- handlers -------------------------------------------------------------------------
    async def completions(self, request: Any) -> Any:
        return await self._generate(request, chat=False)

    async def chat(self, request: Any) -> Any:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Any, chat: bool) -> Any:
        from aiohttp import web

        arrived = time.perf_counter()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            prompt, max_tokens = self._prompt(body, chat), self._max_tokens(body)
        except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return web.json_response({"error": {"message": str(exc), "code": 400}}, status=400)
        rid, q = self._submit(prompt, max_tokens)
        try:
            if body.get("stream"):
                return await self._stream(request, body, chat, rid, q, len(prompt), arrived)
            return await self._whole(body, chat, rid, q, len(prompt), arrived)
        except (ConnectionResetError, asyncio.CancelledError):
            self.counts["aborted"] += 1
            raise
        finally:
            self.queues.pop(rid, None)

    async def _whole(
        self, body: dict, chat: bool, rid: int, q: asyncio.Queue, n_in: int, arrived: float
    ) -> Any:
        from aiohttp import web

        while True:
            r = await q.get()
            if not r.is_final:
                self.ttft.observe(time.perf_counter() - arrived)
                continue
            if r.error is not None:
                self.counts["failed"] += 1
                return web.json_response({"error": {"message": r.error, "code": 500}}, status=500)
            self.counts["success"] += 1
            toks = np.asarray(r.output_tokens)
            choice = self._choice(chat, toks, body, "length", whole=True)
            n = self.reasoning_tokens
            if n and chat:
                choice["message"]["reasoning_content"] = self._text(toks[:n])
                choice["message"]["content"] = self._text(toks[n:]) if len(toks) > n else ""
            elif n:
                choice["text"] = self._text(toks[:n]) + "</think>" + self._text(toks[n:])
            return web.json_response(self._envelope(rid, chat, [choice], n_in, len(toks)))

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

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        while True:
            r = await q.get()
            if r.error is not None:
                self.counts["failed"] += 1
                await _sse(resp, {"error": {"message": r.error, "code": 500}})
                break
            toks = np.asarray(r.output_tokens)
            if len(toks) > sent:
                n = self.reasoning_tokens
                cuts = [sent, min(max(n, sent), len(toks)), len(toks)] if n else [sent, len(toks)]
                for a, b in itertools.pairwise(cuts):
                    if b > a:
                        kind = "reasoning" if a < n else "answer"
                        closes = kind == "reasoning" and b == n
                        choice = self._choice(
                            chat, toks[a:b], body, None, first=a == 0, kind=kind, closes=closes
                        )
                        await _sse(resp, self._envelope(rid, chat, [choice]))
                if sent == 0:
                    self.ttft.observe(time.perf_counter() - arrived)
                sent = len(toks)
            if r.is_final:
                self.counts["success"] += 1
                end = self._choice(chat, toks[:0], body, "length")
                await _sse(resp, self._envelope(rid, chat, [end]))
                if (body.get("stream_options") or {}).get("include_usage"):
                    await _sse(resp, self._envelope(rid, chat, [], n_in, sent))
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

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

    async def metrics(self, request: Any) -> Any:
        from aiohttp import web

        labels = f'model_name="{self.model}"'
        lines = self.ttft.render(labels)
        lines.append("# TYPE llmlib:requests_total counter")
        for k, v in self.counts.items():
            lines.append(f'llmlib:requests_total{{{labels},outcome="{k}"}} {v}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        return app


async def _sse(resp: Any, obj: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def serve(front: ServingFront, host: str, port: int) -> None:
    from aiohttp import web

    front.loop = asyncio.get_running_loop()
    runner = web.AppRunner(front.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"llmlib serving front: http://{host}:{bound} (core {front.cfg.core_type})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        front.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    front.core.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    ap.add_argument("--core_type", default="dummy")
    ap.add_argument("--engine_profile", default="cpu-tiny", help="the dummy core's profile")
    ap.add_argument("--tokenizer_path", default="", help="tokenizer.json directory (text I/O)")
    ap.add_argument("--model", default="llmlib-dummy", help="the model name served")
    ap.add_argument("--dummy_fail_after", type=int, default=-1)
    ap.add_argument(
        "--reasoning_tokens",
        type=int,
        default=0,
        help="answer as a reasoning model: the first N output tokens are reasoning "
        "(chat: reasoning_content deltas; completions: text ending in </think>)",
    )
    ap.add_argument(
        "--no_token_ids",
        action="store_true",
        help="ignore return_token_ids (behave as a server that sends text only)",
    )
    args = ap.parse_args(argv)
    if args.reasoning_tokens < 0:
        ap.error(f"--reasoning_tokens must be 0 or more, got {args.reasoning_tokens}")
    try:
        from aiohttp import web  # noqa: F401
    except ImportError:
        print("error: the serving front needs aiohttp: pip install -e .[http]", file=sys.stderr)
        return 2
    tok = load_tokenizer(args.tokenizer_path) if args.tokenizer_path else None
    explicit: dict[str, Any] = {
        "core_type": args.core_type,
        "engine_profile": args.engine_profile,
        "dummy_fail_after": args.dummy_fail_after,
    }
    if tok is not None:
        explicit["vocab_size"] = tok.vocab_size
    cfg = resolve({}, benchmark="tiny", scenario="server", explicit=explicit)
    front = ServingFront(
        cfg,
        tok,
        args.model,
        token_ids=not args.no_token_ids,
        reasoning_tokens=args.reasoning_tokens,
    )
    asyncio.run(serve(front, args.host, args.port))
    return 0
