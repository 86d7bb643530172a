"""The HTTP side of the ``openai`` core: one aiohttp session to one
OpenAI-compatible server, one request at a time per call to ``request`` (called
concurrently from an event loop), and the SSE stream read into output token ids.

Used in the core's own loop, or in each of its worker processes (``workers_per_core``);
see ``cores.openai.core`` for the behaviour it implements.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from cores.openai.llamacpp import OWNER, model_owners, native_body, native_ids
from cores.openai.stream import ANSWER_MARKERS  # noqa: F401 (tests, core)
from cores.openai.stream import Stream as _Stream
from llmlib.data.tokenizer import Tokenizer, load_tokenizer
from llmlib.errors import HealthCheckError, MissingDependencyError, WrongServerError
from llmlib.serving.async_core import RequestFailed, describe_failure

KEEPALIVE_S = 2.0
log = logging.getLogger(__name__)


CLOSE = {"Connection": "close"}
# the path of each API (llamacpp: llama.cpp's native one)
PATHS = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "llamacpp": "/completion",
}


class Completion(NamedTuple):
    """One finished request: every generated token id (reasoning included: what LoadGen
    counts), where they came from, and the reasoning/answer split of those tokens with the
    time (perf_counter_ns) the first answer token arrived (the first token's time when the
    stream had no reasoning). ``withheld``: ids the server generated but did not stream
    (llama.cpp's native stream; see ``Stream.feed_native``)."""

    ids: np.ndarray
    source: str  # "server" or "retokenized"
    reasoning_tokens: int
    answer_tokens: int
    first_answer_ns: int
    withheld: int = 0


class EndpointClient:
    def __init__(
        self,
        url: str,
        api: str,
        model: str,
        timeout_s: float,
        limit: int,
        tokenizer_path: str = "",
        stall_s: float = 0.0,
        llamacpp: bool = False,
    ) -> None:
        try:
            import aiohttp
        except ImportError:
            raise MissingDependencyError(
                "the endpoint cores need aiohttp: pip install -e .[http]"
            ) from None
        self.aiohttp = aiohttp
        self.url, self.api, self.model = url.rstrip("/"), api, model
        self.path = PATHS.get(api, "/v1/completions")  # auto: settled by health()
        self.timeout_s, self.limit, self.stall_s = timeout_s, limit, stall_s
        self.tok: Tokenizer | None = load_tokenizer(tokenizer_path) if tokenizer_path else None
        self.session: Any = None
        # a llama.cpp server (health() asks): its streams go on connections of their own,
        # since it closes a connection after a stream while saying keep-alive (a request that
        # reuses one fails: "Can not write request body", ~2.5% of streams at concurrency 8)
        self.llamacpp = llamacpp
        self._open: set[_Stream] = set()  # requests in flight (the stall watch reads them)
        self.resent = 0  # requests sent again after a hang-up before any answer
        self._last_byte = 0.0  # time.monotonic() of the last line any stream read
        self._watch: asyncio.Task[None] | None = None

    async def open(self) -> None:
        aiohttp = self.aiohttp
        self.session = aiohttp.ClientSession(
            # idle connections are dropped before servers drop them (uvicorn, under vllm serve
            # and trtllm-serve, closes keep-alive connections idle for 5 s): reusing one the
            # server is closing fails the request with ServerDisconnectedError
            connector=aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        if self.stall_s > 0:
            self._watch = asyncio.get_running_loop().create_task(self._watch_stalls())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.session is not None:
            await self.session.close()

    async def _watch_stalls(self) -> None:
        """Fail what a stalled server holds: every open request when no byte came on any of
        them for ``stall_s`` (and the oldest has waited that long: a SIGSTOPped or hung
        server), or one request whose stream began and then stopped for ``stall_s``.
        Waiting for a first byte alone is not a stall (a server may queue a request). Where
        every open request is unstreamed (llama.cpp's native API in Offline), a quiet spell
        is a stall only if ``/health`` does not answer either: such requests send no byte
        until each one is done (one H100 run had none for 44 s, and a 20 s limit failed all
        512 queries); an engine that hangs while its HTTP answers then holds them until
        ``timeout_s``. Streams keep the stricter rule (a silent server fails them)."""
        period = min(1.0, self.stall_s / 4)
        while True:
            await asyncio.sleep(period)
            if not self._open:
                continue
            now = time.monotonic()
            oldest = min(s.started for s in self._open)
            quiet = now - max(self._last_byte, oldest)
            whole = all(s.whole for s in self._open)
            if quiet > self.stall_s and whole and await self._alive():
                self._last_byte = time.monotonic()  # busy, not stalled: wait another spell
            elif quiet > self.stall_s:
                why = (  # (no measured numbers: the report groups failures by reason)
                    f"no byte from {self.url} for over {self.stall_s:g} s on any open request: "
                    "the server is stalled or stopped (--stall_timeout_s)"
                )
                for s in list(self._open):
                    s.stall(why)
                continue
            for s in list(self._open):
                if s.last and now - s.last > self.stall_s:
                    s.stall(
                        f"the stream from {self.url} stopped for over {self.stall_s:g} s after "
                        "it began (--stall_timeout_s)"
                    )

    async def _alive(self) -> bool:
        """Whether the server answers ``/health`` with 200 within a few seconds."""
        wait = self.aiohttp.ClientTimeout(total=min(5.0, self.stall_s / 2))
        try:  # (a session of its own: every connection of the main one may be held)
            async with (
                self.aiohttp.ClientSession(timeout=wait) as probe,
                probe.get(self.url + "/health") as resp,
            ):
                return bool(resp.status == 200)
        except (self.aiohttp.ClientError, TimeoutError, OSError):
            return False

    def describe(self, exc: BaseException) -> str:
        """A failed request's reason."""
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.timeout_s:g} s"
        return describe_failure(exc)

    async def health(self) -> None:
        try:
            async with self.session.get(self.url + "/health") as resp:
                if resp.status != 200:
                    raise HealthCheckError(f"{self.url}/health: HTTP {resp.status}")
        except self.aiohttp.ClientError as exc:
            raise HealthCheckError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        try:
            async with self.session.get(self.url + "/v1/models") as resp:
                data = (await resp.json(content_type=None)).get("data") if resp.ok else None
        except (self.aiohttp.ClientError, ValueError, AttributeError):
            data = None
        if not data and not self.model:
            raise HealthCheckError(f"{self.url}/v1/models lists no model: give --endpoint_model")
        self.llamacpp = OWNER in model_owners(data)  # llama.cpp's server says so
        if self.api == "llamacpp" and not self.llamacpp:
            raise WrongServerError(
                f"--endpoint_api=llamacpp: {self.url} is not llama.cpp's server (its "
                "/v1/models does not say owned_by llamacpp); use --endpoint_api=auto"
            )
        if self.api == "auto":
            self.api = "llamacpp" if self.llamacpp else "completions"
            self.path = PATHS[self.api]
        if not self.model:
            self.model = str(data[0]["id"])  # type: ignore[index]

    def body(self, prompt: np.ndarray, max_new_tokens: int, stream: bool = True) -> dict[str, Any]:
        if self.api == "llamacpp":
            return native_body(prompt, max_new_tokens, stream)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(max_new_tokens),
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        if self.api == "chat":
            assert self.tok is not None
            body["messages"] = [{"role": "user", "content": self.tok.decode(prompt)}]
        else:
            body["prompt"] = prompt.tolist()
        return body

    async def request(
        self,
        prompt: np.ndarray,
        max_new_tokens: int,
        on_first: Callable[[np.ndarray], None] | None,
    ) -> Completion:
        """Stream one completion; ``on_first(ids)`` at the first output (reasoning counts:
        MLPerf's first token is the first generated one). Returns the ``Completion``; raises
        for any failure. llama.cpp's native API is asked unstreamed when no first token is
        wanted: its answer then holds every id (its stream can withhold some)."""
        if self.api == "llamacpp" and on_first is None:
            return await self._whole(prompt, max_new_tokens)
        try:
            return await self._stream(prompt, max_new_tokens, on_first, self.session)
        except self.aiohttp.ServerDisconnectedError:
            # hung up on before any answer: most often a pooled keep-alive connection the
            # server closed as it was reused (uvicorn drops connections idle 5 s; a client
            # whose loop was held up by a busy machine can still pick one). Sent again once,
            # on a connection of its own; a server that is gone fails it again.
            self.resent += 1
            if self.resent == 1:
                log.warning(
                    "%s hung up on a request before any answer; sent again on a connection "
                    "of its own (each such request is sent again once)",
                    self.url,
                )
            async with self.aiohttp.ClientSession(
                connector=self.aiohttp.TCPConnector(force_close=True),
                timeout=self.session.timeout,
            ) as fresh:
                return await self._stream(prompt, max_new_tokens, on_first, fresh)

    async def _stream(
        self,
        prompt: np.ndarray,
        max_new_tokens: int,
        on_first: Callable[[np.ndarray], None] | None,
        session: Any,
    ) -> Completion:
        """One streamed request on ``session`` (``request``)."""
        s = _Stream(time.monotonic(), asyncio.current_task())
        self._open.add(s)
        try:
            async with session.post(
                self.url + self.path,
                json=self.body(prompt, max_new_tokens),
                headers=CLOSE if self.llamacpp else None,
            ) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    raise RequestFailed(f"HTTP {resp.status} from {self.url}: {text}")
                # what has arrived, whole lines parsed: aiohttp's own line iteration (a
                # coroutine step a line) cost 5-10 us of the client's 27-33 us an event at
                # 32 in flight (bench-client --live, BENCHMARKS.md)
                rest = b""
                async for chunk in resp.content.iter_any():
                    self._last_byte = s.last = time.monotonic()
                    lines = (rest + chunk if rest else chunk).split(b"\n")
                    rest = lines.pop()
                    for raw in lines:  # (an event's blank line is skipped here)
                        if len(raw) > 1 and s.feed(raw) and on_first and s.first_ids is None:
                            on_first(self._first_ids(s))
                if rest:
                    s.feed(rest)
            if not s.done:
                raise RequestFailed("the stream ended before its last event (server closed it)")
        except asyncio.CancelledError:
            failed = s.stall_failure(self._partial_ids(s) if s.ids or s.texts else None)
            if failed is None:
                raise
            raise failed from None
        except Exception as exc:
            if s.first_ids is None and not s.ids:
                raise
            # the failure came after output: say what had arrived (the harness completes the
            # request with it, so LoadGen's TPOT stays meaningful)
            raise RequestFailed(self.describe(exc), self._partial_ids(s)) from exc
        finally:
            self._open.discard(s)
        if not s.ids and not "".join(s.texts):
            raise RequestFailed("empty stream: no tokens")
        ids, source = self._final_ids(s)
        withheld = 0
        if s.predicted is not None:  # llama.cpp's final event counts what it generated
            withheld = s.predicted - len(ids)
            if withheld < 0:
                raise RequestFailed(
                    f"{self.url} streamed {len(ids)} token ids but says it generated {s.predicted}"
                )
        return Completion(ids, source, *self._split(s, len(ids)), withheld)

    async def _whole(self, prompt: np.ndarray, max_new_tokens: int) -> Completion:
        """One unstreamed request to llama.cpp's native ``/completion``: every generated id
        comes back in ``tokens``."""
        s = _Stream(time.monotonic(), asyncio.current_task())  # (for the stall watch)
        s.whole = True
        self._open.add(s)
        try:
            body = self.body(prompt, max_new_tokens, stream=False)
            async with self.session.post(self.url + self.path, json=body) as resp:
                self._last_byte = s.last = time.monotonic()
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    raise RequestFailed(f"HTTP {resp.status} from {self.url}: {text}")
                raw = await resp.read()
            t = time.perf_counter_ns()
        except asyncio.CancelledError:
            failed = s.stall_failure()
            if failed is None:
                raise
            raise failed from None
        finally:
            self._open.discard(s)
        ids = native_ids(raw, self.url)
        if not len(ids):
            raise RequestFailed("empty answer: no tokens")
        return Completion(ids, "server", 0, len(ids), t)

    def _split(self, s: _Stream, total: int) -> tuple[int, int, int]:
        """(reasoning tokens, answer tokens, first answer time) of a finished stream. Chunks
        the server marked as reasoning (``reasoning_content``/``reasoning`` deltas) are
        reasoning; else, in a stream of text, everything up to the end of an answer marker
        (``</think>``, harmony's final channel) is. Token ids are attributed per chunk when
        the server sent them, else the reasoning text is re-tokenized."""
        cut = s.answer_start()  # index of the first answer chunk
        if cut is None:
            return 0, total, s.times[0] if s.times else 0
        if s.server_ids:
            reasoning = sum(s.chunk_ids[:cut])
        else:
            reasoning = min(total, len(self._encode("".join(s.texts[:cut]))))
        first_answer = next(
            (t for t, n in zip(s.times[cut:], s.chunk_ids[cut:], strict=True) if n), 0
        ) if s.server_ids else (s.times[cut] if cut < len(s.times) else 0)  # fmt: skip
        return reasoning, total - reasoning, first_answer

    def _partial_ids(self, s: _Stream) -> np.ndarray:
        """The output ids that arrived before a failure (the first-token ids at least)."""
        try:
            return self._final_ids(s)[0]
        except RequestFailed:  # text we cannot re-tokenize
            return s.first_ids if s.first_ids is not None else np.zeros(0, np.uint32)

    def _first_ids(self, s: _Stream) -> np.ndarray:
        if s.server_ids:
            s.first_ids = np.asarray(s.ids, dtype=np.uint32)
        else:
            s.first_ids = np.asarray(self._encode("".join(s.texts)), dtype=np.uint32)
            s.first_text_len = len(s.texts)
        return s.first_ids

    def _final_ids(self, s: _Stream) -> tuple[np.ndarray, str]:
        if s.server_ids:
            return np.asarray(s.ids, dtype=np.uint32), "server"
        if s.first_ids is None:
            return np.asarray(self._encode("".join(s.texts)), dtype=np.uint32), "retokenized"
        rest = np.asarray(self._encode("".join(s.texts[s.first_text_len :])), dtype=np.uint32)
        return np.concatenate([s.first_ids, rest]), "retokenized"

    def _encode(self, text: str) -> list[int]:
        if self.tok is None:
            raise RequestFailed(
                f"{self.url} sent text without token ids: give --tokenizer_path to re-tokenize"
            )
        return self.tok.encode(text, add_bos=False)
