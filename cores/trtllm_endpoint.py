"""``trtllm_endpoint``: a client core for any OpenAI-compatible server over HTTP.

trtllm-serve, ``vllm serve``, llama.cpp's server and ``python -m harness serve`` all speak
``/v1/completions`` and ``/v1/chat/completions`` with SSE streaming. One core per URL
(``--trtllm_server_urls``). Each core runs an asyncio loop in its own thread with one
aiohttp session; at most ``endpoint_concurrency`` requests are in flight, the rest wait.

Tokens in: the completions API gets the prompt as token ids (no re-tokenization); the chat
API needs text, so the prompt is decoded with ``--tokenizer_path``.
Tokens out: every request asks for ``return_token_ids`` (vLLM's option; our serving front
honours it too) and the ids the server sends are used as they are. A server that sends only
text is re-tokenized with ``--tokenizer_path``: the first chunk's text gives the first-token
ids, the rest of the text the remaining ids (so the final data still starts with the
first-token data). Which way each request's tokens came is counted and the report says so.
A chunk may carry any number of tokens; none is assumed per chunk.

A failure is a record, not a retry: an HTTP error status, a connection error, a timeout
(``endpoint_timeout_s``), an error event, a stream that ends without ``[DONE]`` or with no
tokens: the request completes as failed with the reason, and the report counts it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from llmlib.async_core import AsyncLoopCore, RequestFailed
from llmlib.core import CoreCapabilities
from llmlib.errors import ConfigError, HealthCheckError, MissingDependencyError
from llmlib.request import LLMRequest, LLMResponse
from llmlib.tokenizer import Tokenizer, load_tokenizer

KEEPALIVE_S = 2.0


class EndpointCore(AsyncLoopCore):
    name = "trtllm_endpoint"
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        urls = list(cfg.trtllm_server_urls)
        if not urls and not cfg.launch_server:
            raise ConfigError(
                f"core_type {cls.name} needs --trtllm_server_urls (comma list of server URLs, "
                "e.g. http://127.0.0.1:8000) or --launch_server"
            )
        for u in urls:
            if not str(u).startswith(("http://", "https://")):
                raise ConfigError(f"--trtllm_server_urls: {u!r} is not an http(s) URL")
        if cfg.endpoint_api == "chat" and not cfg.tokenizer_path:
            raise ConfigError("--endpoint_api=chat sends text: give --tokenizer_path")

    @classmethod
    def num_cores_for_workload(cls, cfg: Any) -> int:
        cls.validate_config(cfg)
        return len(cfg.trtllm_server_urls)

    def __init__(self, core_id: int, cfg: Any, callback: Any = None) -> None:
        try:
            import aiohttp
        except ImportError:
            raise MissingDependencyError(
                f"core_type {self.name} needs aiohttp: pip install -e .[http]"
            ) from None
        self.validate_config(cfg)
        self._aiohttp = aiohttp
        self.url = str(cfg.trtllm_server_urls[core_id]).rstrip("/")
        self.api = cfg.endpoint_api
        self.model = cfg.endpoint_model
        self.tok: Tokenizer | None = (
            load_tokenizer(cfg.tokenizer_path) if cfg.tokenizer_path else None
        )
        self.path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        self.timeout_s = float(cfg.endpoint_timeout_s)
        self.token_source: Counter[str] = Counter()
        self._session: Any = None
        self._limit = int(cfg.endpoint_concurrency)
        super().__init__(core_id, cfg, callback, concurrency=self._limit)

    async def _setup(self) -> None:
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            # idle connections are dropped before servers drop them (uvicorn, under vllm serve
            # and trtllm-serve, closes keep-alive connections idle for 5 s): reusing one the
            # server is closing fails the request with ServerDisconnectedError
            connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )

    async def _teardown(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.timeout_s:g} s"
        return super()._describe(exc)

    # --- one request ----------------------------------------------------------------------
    def _body(self, req: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(req.max_new_tokens),
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        ids = np.asarray(req.input_tokens)
        if self.api == "chat":
            assert self.tok is not None
            body["messages"] = [{"role": "user", "content": self.tok.decode(ids)}]
        else:
            body["prompt"] = ids.tolist()
        return body

    async def _serve(self, req: LLMRequest) -> None:
        stream = _Stream()
        async with self._session.post(self.url + self.path, json=self._body(req)) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300]
                raise RequestFailed(f"HTTP {resp.status} from {self.url}: {text}")
            async for raw in resp.content:
                if stream.feed(raw) and req.stream and stream.first_ids is None:
                    first = self._first_ids(stream)
                    self._deliver(
                        [
                            LLMResponse(
                                req.request_id, first, False, time.perf_counter_ns(), self.core_id
                            )
                        ]
                    )
        if not stream.done:
            raise RequestFailed("the stream ended without [DONE] (server closed it)")
        if not stream.ids and not "".join(stream.texts):
            raise RequestFailed("empty stream: no tokens")
        tokens = self._final_ids(stream)
        self._deliver(
            [LLMResponse(req.request_id, tokens, True, time.perf_counter_ns(), self.core_id)]
        )

    def _first_ids(self, s: _Stream) -> np.ndarray:
        if s.server_ids:
            s.first_ids = np.asarray(s.ids, dtype=np.uint32)
        else:
            s.first_ids = np.asarray(self._encode("".join(s.texts)), dtype=np.uint32)
            s.first_text_len = len(s.texts)
        return s.first_ids

    def _final_ids(self, s: _Stream) -> np.ndarray:
        if s.server_ids:
            self.token_source["server"] += 1
            return np.asarray(s.ids, dtype=np.uint32)
        self.token_source["retokenized"] += 1
        if s.first_ids is None:
            return np.asarray(self._encode("".join(s.texts)), dtype=np.uint32)
        rest = self._encode("".join(s.texts[s.first_text_len :]))
        return np.concatenate([s.first_ids, np.asarray(rest, dtype=np.uint32)])

    def _encode(self, text: str) -> list[int]:
        if self.tok is None:
            raise RequestFailed(
                f"{self.url} sent text without token ids: give --tokenizer_path to re-tokenize"
            )
        return self.tok.encode(text, add_bos=False)

    # --- health and report ----------------------------------------------------------------
    async def _health(self) -> None:
        try:
            async with self._session.get(self.url + "/health") as resp:
                if resp.status != 200:
                    raise HealthCheckError(f"{self.url}/health: HTTP {resp.status}")
        except self._aiohttp.ClientError as exc:
            raise HealthCheckError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        if not self.model:
            async with self._session.get(self.url + "/v1/models") as resp:
                data = (await resp.json()).get("data") or []
                if not data:
                    raise HealthCheckError(f"{self.url}/v1/models lists no model")
                self.model = str(data[0]["id"])

    def report_notes(self) -> list[str]:
        src = ", ".join(f"{n} {k}" for k, n in sorted(self.token_source.items()))
        api = f"{self.url}{self.path}, model {self.model or '?'}"
        return [f"core {self.core_id}: {api}; output token ids: {src or 'none completed'}"]


class _Stream:
    """What one SSE stream has said so far."""

    __slots__ = ("ids", "texts", "server_ids", "done", "first_ids", "first_text_len")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.server_ids = False
        self.done = False
        self.first_ids: np.ndarray | None = None
        self.first_text_len = 0

    def feed(self, raw: bytes) -> bool:
        """Take one SSE line; True when it brought output (token ids or text)."""
        line = raw.strip()
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return False
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            raise RequestFailed(f"not JSON in the stream: {data[:100]!r}") from None
        if obj.get("error"):
            raise RequestFailed(f"server error: {obj['error']}")
        got = False
        for c in obj.get("choices") or ():
            ids = c.get("token_ids")
            text = c.get("text")
            if text is None:
                text = (c.get("delta") or {}).get("content") or ""
            if ids:
                self.server_ids = True
                self.ids.extend(ids)
                got = True
            if text:
                self.texts.append(text)
                got = True
        return got
