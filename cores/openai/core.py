"""``openai`` (formerly ``trtllm_endpoint``, still accepted): a client core for any
OpenAI-compatible server over HTTP.

trtllm-serve, ``vllm serve``, llama.cpp's server and ``python -m harness serve`` all speak
``/v1/completions`` and ``/v1/chat/completions`` with SSE streaming. One core per URL
(``--server_urls``). Each core runs an asyncio loop in its own thread with one
aiohttp session; at most ``endpoint_concurrency`` requests are in flight, the rest wait.

Tokens in: the completions API gets the prompt as token ids (no re-tokenization); the chat
API needs text, so the prompt is decoded with ``--tokenizer_path``. llama.cpp's server is
spoken to through its native ``/completion`` (``endpoint_api`` llamacpp; ``auto``, the
default, picks it where the launch op started llama.cpp or ``/v1/models`` says
``owned_by: llamacpp``): token ids in, and out (``return_tokens``), asked unstreamed when
LoadGen wants no first token (Offline: every id comes back); streamed otherwise, where
llama.cpp sends no event for a token that ends inside a UTF-8 character, so its id is lost:
the final event's count shows how many, and the report says so.
Tokens out: every request asks for ``return_token_ids`` (vLLM's option; our serving front
honours it too) and the ids the server sends are used as they are. A server that sends only
text is re-tokenized with ``--tokenizer_path``: the first chunk's text gives the first-token
ids, the rest of the text the remaining ids (so the final data still starts with the
first-token data). Which way each request's tokens came is counted and the report says so.
A chunk may carry any number of tokens; none is assumed per chunk.

Worker processes (``workers_per_core``, default 0: none): the core hands its requests, in
batches, to N processes (spawned), each with its own event loop, session and share of the
concurrency cap, so one Python process's GIL is not the client's ceiling; their responses
come back in batches to a reader thread that delivers them. Timestamps are taken in the
worker (``perf_counter_ns`` is the system's monotonic clock, the same in every process). A
worker that dies takes its core down: everything pending fails, the run ends. With
``client_backend`` ray the workers are Ray actors (``llmlib.serving.raypool``) on a Ray
started here or the cluster at ``ray_address``; their clocks are other hosts', so answers
are stamped when they reach this process, and the workers' own durations are kept beside
(the report says what the hop added). A lost actor or node takes the core down the same way.

Reasoning models: a server may stream the reasoning apart from the answer
(``reasoning_content`` or ``reasoning`` deltas, as vLLM's reasoning parsers do) or as text
with markers (``</think>``; gpt-oss's harmony ``<|channel|>final<|message|>``). Every
generated token goes to LoadGen (its first token is the first generated one, reasoning
included); the core keeps, per request, how many were reasoning and how many answer, and
when the first answer token came, for the report (``reasoning.csv``) and for scoring.

A failure is a record, not a retry: an HTTP error status, a connection error, a timeout
(``endpoint_timeout_s``), an error event, a stream that ends without ``[DONE]`` or with no
tokens: the request completes as failed with the reason, and the report counts it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

from cores.openai.client import EndpointClient
from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError
from llmlib.serving.async_core import AsyncLoopCore
from llmlib.serving.core import CoreCapabilities
from llmlib.serving.procpool import WorkerPool
from llmlib.serving.raypool import RaySettings, RayWorkerPool
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse
from llmlib.serving.workerclocks import WorkerClocks


@dataclass(frozen=True)
class EndpointSettings(Section):
    """The openai core's settings (the trtllm_disagg core shares them)."""

    group: ClassVar[str] = "openai"
    server_urls: list[str] = setting(
        [],
        "comma list of OpenAI-compatible server URLs, one core each (trtllm-serve, vllm "
        "serve, llama.cpp, python -m harness serve)",
        aliases=("trtllm_server_urls",),
    )
    endpoint_api: str = setting(
        "auto",
        "which API: completions (token ids in), chat (text in), llamacpp (llama.cpp's native "
        "/completion: token ids in and out), auto (llamacpp where the server is llama.cpp: "
        "launched as one, or so its /v1/models says; else completions)",
        choices=("auto", "completions", "chat", "llamacpp"),
    )
    endpoint_model: str = setting("", "model name sent (empty: the server's first)")
    workers_per_core: int = setting(
        0,
        "worker processes per endpoint core, each with its own loop and session (0: none)",
        minimum=0,
    )
    endpoint_concurrency: int = setting(
        512, "requests in flight per core (more wait in the core)", minimum=1
    )
    endpoint_timeout_s: float = setting(
        600.0, "a request's limit, first byte to last (it fails after)", minimum=0.1
    )


def check_http_url(url: str, flag: str) -> None:
    """An http(s) URL with a host and, if given, a port that is a number in range."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag}: {url!r} is not an http(s) URL (http://host:port)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ConfigError(
            f"{flag}: {url!r} has a port that is not a number from 0 to 65535"
        ) from None


@register_core("openai")
class EndpointCore(AsyncLoopCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        s = EndpointSettings.of(cfg)
        urls = s.server_urls
        if not urls and not cfg.launch_server:
            raise ConfigError(
                f"core_type {cls.name} needs --server_urls (comma list of server URLs, "
                "e.g. http://127.0.0.1:8000) or --launch_server"
            )
        for u in urls:
            check_http_url(u, "--server_urls")
        RaySettings.of(cfg).check(s.workers_per_core, "--workers_per_core=N (N >= 1)")
        if s.endpoint_api == "chat" and not cfg.tokenizer_path:
            raise ConfigError("--endpoint_api=chat sends text: give --tokenizer_path")

    @classmethod
    def preflight(cls, cfg: Config) -> None:
        """Ray workers on a cluster: one that can hold every core's."""
        s = EndpointSettings.of(cfg)
        n = s.workers_per_core * max(1, len(s.server_urls))
        RaySettings.of(cfg).preflight(n, "--workers_per_core")

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        cls.validate_config(cfg)
        return len(EndpointSettings.of(cfg).server_urls)

    @classmethod
    def config_for_core(cls, index: int, cfg: Config) -> Any:
        """Core ``index`` talks to the ``index``-th URL: its config names that one alone (a
        routing core numbers its pools' cores globally, so the id is no index)."""
        urls = EndpointSettings.of(cfg).server_urls
        return cfg.replace(server_urls=[urls[index]]) if len(urls) > 1 else cfg

    def __init__(self, core_id: int, cfg: Config, callback: Any = None) -> None:
        self.validate_config(cfg)
        s = EndpointSettings.of(cfg)
        limit = s.endpoint_concurrency
        urls = s.server_urls
        self.settings = {
            "url": (urls[0] if len(urls) == 1 else urls[core_id]).rstrip("/"),
            "api": s.endpoint_api,
            "model": s.endpoint_model,
            "timeout_s": s.endpoint_timeout_s,
            "limit": limit,
            "tokenizer_path": cfg.tokenizer_path,
            "stall_s": float(cfg.stall_timeout_s),
        }
        self.client = EndpointClient(**self.settings)
        self.url, self.path = self.client.url, self.client.path
        self.token_source: Counter[str] = Counter()
        self.withheld = [0, 0]  # llama.cpp streams that withheld ids: requests, ids
        # (request id, sample, reasoning tokens, answer tokens, ns from issue to the first
        # answer token), flat, 40 bytes per finished request once any had reasoning
        self.splits = array("q")
        self._issued: dict[int, tuple[int, int]] = {}  # worker path: id -> (sample, issue)
        self.n_workers = s.workers_per_core
        self._pool: WorkerPool | RayWorkerPool | None = None
        ray = RaySettings.of(cfg)
        self._ray = ray if ray.on_ray else None
        self.clocks = WorkerClocks()  # Ray workers: their own clocks beside ours
        if self._ray is not None:  # (from the main thread: Ray started from another hangs)
            self._ray.start(s.workers_per_core)
        super().__init__(core_id, cfg, callback, concurrency=limit)

    @property
    def model(self) -> str:
        return self.client.model

    async def _setup(self) -> None:
        await self.client.open()

    async def _teardown(self) -> None:
        await self.client.close()

    def _describe(self, exc: BaseException) -> str:
        return self.client.describe(exc)

    async def _health(self) -> None:
        await self.client.health()
        # workers use what /v1/models named, and the API it settled
        self.settings["model"], self.settings["api"] = self.client.model, self.client.api
        self.settings["llamacpp"] = self.client.llamacpp
        self.path = self.client.path

    def _health_check_impl(self) -> None:
        super()._health_check_impl()
        if self.n_workers and self._pool is None:  # started once the model name is known
            self._start_workers()

    # --- in process -----------------------------------------------------------------------
    async def _serve(self, req: LLMRequest) -> None:
        rid, cid = req.request_id, self.core_id

        def first(ids: np.ndarray) -> None:
            self._deliver([LLMResponse(rid, ids, False, time.perf_counter_ns(), cid)])

        done = await self.client.request(
            np.asarray(req.input_tokens), req.max_new_tokens, first if req.stream else None
        )
        self._count(done.source, done.withheld)
        self._note_split(rid, req.sample_index, req.issue_ns, done.reasoning_tokens,
                         done.answer_tokens, done.first_answer_ns)  # fmt: skip
        self._deliver([LLMResponse(rid, done.ids, True, time.perf_counter_ns(), cid)])

    def _count(self, source: str, withheld: int) -> None:
        self.token_source[source] += 1
        if withheld:
            self.withheld[0] += 1
            self.withheld[1] += withheld

    def _note_split(
        self, rid: int, sample: int, issue_ns: int, reasoning: int, answer: int, first_ns: int
    ) -> None:
        """Keep a finished request's reasoning/answer split (only once a stream had
        reasoning: until then nothing is kept)."""
        if reasoning or self.splits:
            ttfa = first_ns - issue_ns if first_ns and issue_ns else -1
            self.splits.extend((rid, sample, reasoning, answer, ttfa))

    def reasoning_records(self) -> list[tuple[int, int, int, int, int]]:
        v = self.splits
        return [(v[k], v[k + 1], v[k + 2], v[k + 3], v[k + 4]) for k in range(0, len(v), 5)]

    # --- worker processes -----------------------------------------------------------------
    def _start_workers(self) -> None:
        share = max(1, self.client.limit // self.n_workers)
        settings = [dict(self.settings, limit=share) for _ in range(self.n_workers)]
        self._next = 0
        name, r = f"endpoint-{self.core_id}", self._ray
        if r is None:
            self._pool = WorkerPool(name, worker_main, settings, self._on_batch, self._fail)
            return
        self._pool = r.pool(name, worker_main, settings, self._on_batch, self._fail)

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        if not self.n_workers:
            super()._enqueue_impl(requests)
            return
        if self._pool is None:
            self._start_workers()
        assert self._pool is not None
        items = [
            (
                r.request_id,
                np.asarray(r.input_tokens, dtype=np.uint32).tobytes(),
                int(r.max_new_tokens),
                bool(r.stream),
            )
            for r in requests
        ]
        for r in requests:
            self._issued[r.request_id] = (r.sample_index, r.issue_ns)
        n = self.n_workers
        for k in range(n):  # round robin, one batch per worker
            part = items[(k - self._next) % n :: n]
            if part:
                self._pool.put(k, part)
        self._next = (self._next + len(items)) % n

    def _on_batch(self, batch: list[Any]) -> None:
        cid = self.core_id
        out = []
        now = time.perf_counter_ns()  # Ray workers' clocks are other hosts': stamped here
        for rid, data, final, t, err, source, split, t0 in batch:
            ids = np.frombuffer(data, dtype=np.uint32)
            if self._ray is not None:  # (a failed request leaves no row of clocks)
                t = self._clock(rid, final, t, t0, now) if err is None else now
                if err is not None:
                    self.clocks.forget(rid)
            if final:
                sample, issue = self._issued.pop(rid, (-1, 0))
            if err is not None:
                out.append(LLMResponse(rid, ids, True, t, cid, err))
                continue
            if final:
                self._count(source, split[3])
                self._note_split(rid, sample, issue, *split[:3])
            out.append(LLMResponse(rid, ids, final, t, cid))
        self._deliver(out)

    def _clock(self, rid: int, final: bool, t: int, t0: int, now: int) -> int:
        """A Ray worker's answer: ``now`` (the driver's clock) for LoadGen; the worker's own
        durations kept beside the driver's for the report (what the hop cost)."""
        if final:
            self.clocks.final(rid, self._issued.get(rid, (-1, 0))[1], t, t0, now)
        else:
            self.clocks.first(rid, t, now)
        return now

    def clock_lines(self) -> list[str]:
        """The report's lines on Ray workers: where they ran, latency on the worker's clock
        against the driver's, and what the hop added."""
        if self._ray is None or not isinstance(self._pool, RayWorkerPool):
            return []
        line = f"core {self.core_id}: {self._ray.describe(self._pool, 'client workers')}"
        clocks = self.clocks.line()
        return [f"{line}; {clocks}" if clocks else line]

    def write_records(self, run_dir: Path) -> list[str]:
        """Ray workers: ``worker_clocks_core<N>.csv`` (``WorkerClocks``)."""
        return self.clocks.write(run_dir, self.core_id)

    def _close_impl(self) -> None:
        if self._pool is not None:
            self._pool.close()
        super()._close_impl()

    def report_notes(self) -> list[str]:
        src = ", ".join(f"{n} {k}" for k, n in sorted(self.token_source.items()))
        api = f"{self.url}{self.path}, model {self.model or '?'}"
        procs = f"; {self.n_workers} worker processes" if self.n_workers else ""
        notes = [f"core {self.core_id}: {api}{procs}; output token ids: {src or 'none completed'}"]
        notes += self.clock_lines()
        if self.withheld[0]:
            n, ids = self.withheld
            notes.append(
                f"core {self.core_id}: llama.cpp's stream withheld {ids} token ids from {n} "
                "requests (it streams no event for a token that ends inside a UTF-8 character); "
                "LoadGen got the ids streamed (Offline asks unstreamed and gets every id)"
            )
        return notes


# --- the worker process ----------------------------------------------------------------------
def worker_main(settings: dict[str, Any], inq: Any, outq: Any) -> None:
    """A worker: requests in batches from ``inq`` (None stops it), responses in batches to
    ``outq`` as (id, token bytes, is_final, time_ns, error, source, reasoning split)."""
    asyncio.run(_worker(settings, inq, outq))


async def _worker(settings: dict[str, Any], inq: Any, outq: Any) -> None:
    client = EndpointClient(**settings)
    await client.open()
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(client.limit)
    pending: list[tuple[Any, ...]] = []
    tasks: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()

    def emit(item: tuple[Any, ...]) -> None:
        if not pending:  # everything emitted in this loop iteration goes in one batch
            loop.call_soon(flush)
        pending.append(item)

    def flush() -> None:
        outq.put(list(pending))
        pending.clear()

    async def one(rid: int, prompt: bytes, max_new: int, stream: bool) -> None:
        t0 = time.perf_counter_ns()  # the worker's receipt, on its own clock
        async with slots:

            def first(ids: np.ndarray) -> None:
                emit((rid, ids.tobytes(), False, time.perf_counter_ns(), None, "", None, 0))

            try:
                done = await client.request(
                    np.frombuffer(prompt, dtype=np.uint32), max_new, first if stream else None
                )
            except Exception as exc:
                got = getattr(exc, "tokens", None)  # what arrived before the failure
                data = b"" if got is None else np.asarray(got, dtype=np.uint32).tobytes()
                emit((rid, data, True, time.perf_counter_ns(), client.describe(exc), "", None, t0))
                return
            split = (done.reasoning_tokens, done.answer_tokens, done.first_answer_ns,
                     done.withheld)  # fmt: skip
            emit((rid, done.ids.tobytes(), True, time.perf_counter_ns(), None, done.source, split,
                  t0))  # fmt: skip

    def start(batch: list[tuple[Any, ...]] | None) -> None:
        if batch is None:
            stop.set()
            return
        for item in batch:
            t = loop.create_task(one(*item))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    def read() -> None:
        while True:
            batch = inq.get()
            loop.call_soon_threadsafe(start, batch)
            if batch is None:
                return

    threading.Thread(target=read, daemon=True).start()
    await stop.wait()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
