"""What makes the serving front safe to expose: API keys, per-key rate limits, a bounded
admission queue, body limits, per-request timeouts and draining, as one aiohttp middleware.

In the order a request meets them (each refusal is JSON ``{"error": {"message", "code"}}``
and counted in ``llmlib:rejected_requests`` by reason):
1. draining (after SIGTERM): 503, nothing new is admitted;
2. the API key (``Authorization: Bearer KEY``, when the server has keys): 401;
3. the key's rate (a token bucket: ``rate`` requests a second, ``burst`` at once; by client
   address when the server has no keys): 429 with ``Retry-After`` in whole seconds;
4. the body's size (``Content-Length``, and aiohttp's own cap for a chunked body): 413;
5. admission: at most ``max_in_flight`` requests are being served; one more is 429 with
   ``Retry-After: 1`` at once, so memory never grows with the offered load;
6. the request's time (``timeout_s``): 504 if no response has started by then (a stream that
   has started is cut).
``/health``, ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` are open: probes
and scrapers carry no key and are never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError

OPEN_PATHS = frozenset({"/health", "/healthz", "/readyz", "/metrics", "/openapi.json"})
KEYS_ENV = "LLMLIB_API_KEYS"


@dataclass
class Limits:
    api_keys: frozenset[str] = frozenset()  # empty: no key needed
    rate: float = 0.0  # requests a second per key (0: no limit)
    burst: int = 0  # requests at once per key (0: max(1, rate))
    max_body_bytes: int = 8 << 20
    max_in_flight: int = 1024
    timeout_s: float = 600.0
    max_batch: int = 256  # prompts in one /generate or /loglikelihood
    max_tokens: int = 4096  # the cap on max_tokens
    max_prompt_tokens: int = 32768


def load_keys(path: str, env: dict[str, str] | None = None) -> frozenset[str]:
    """API keys from a file (one a line; blank lines and ``#`` comments skipped) and from
    ``$LLMLIB_API_KEYS`` (comma list). A file that is missing or holds no key is a
    ConfigError: a server meant to need keys must not start open."""
    listed = (os.environ if env is None else env).get(KEYS_ENV, "")
    keys = {k.strip() for k in listed.split(",") if k.strip()}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--api_keys_file {p}: no such file (one API key a line)")
        lines = [ln.split("#", 1)[0].strip() for ln in p.read_text(errors="replace").splitlines()]
        found = {ln for ln in lines if ln}
        if not found:
            raise ConfigError(f"--api_keys_file {p} holds no key (one API key a line)")
        keys |= found
    for k in keys:
        if any(c.isspace() for c in k) or not k.isprintable():
            raise ConfigError("an API key holds whitespace or an unprintable character")
    return frozenset(keys)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Guard:
    """The middleware's state: limits, buckets, what is in flight, whether draining."""

    limits: Limits
    reject: Callable[[str], None] = lambda reason: None  # counts a refusal by reason
    in_flight: int = 0
    draining: bool = False
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def _take(self, who: str, now: float) -> float:
        """0 if ``who`` may go now (one token taken), else seconds until it may."""
        rate = self.limits.rate
        cap = float(self.limits.burst or max(1.0, rate))
        b = self.buckets.get(who)
        if b is None:
            if len(self.buckets) > 100_000:  # clients that come and go: forget the full ones
                self.buckets = {
                    k: v for k, v in self.buckets.items() if v.tokens + (now - v.at) * rate < cap
                }
            b = self.buckets[who] = _Bucket(cap, now)
        b.tokens = min(cap, b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / rate

    def middleware(self) -> Any:
        from aiohttp import web

        lim = self.limits
        self.idle.set()

        def refuse(status: int, reason: str, message: str, **headers: str) -> Any:
            self.reject(reason)
            body = {"error": {"message": message, "code": status}}
            return web.json_response(body, status=status, headers=headers or None)

        @web.middleware
        async def guard(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            if request.path in OPEN_PATHS:
                return await handler(request)
            if self.draining:
                return refuse(503, "draining", "the server is draining: retry elsewhere")
            who = request.remote or "?"
            if lim.api_keys:
                auth = request.headers.get("Authorization", "")
                key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
                if key not in lim.api_keys:
                    why = "a wrong API key" if key else "no API key (Authorization: Bearer KEY)"
                    return refuse(401, "auth", why, **{"WWW-Authenticate": "Bearer"})
                who = key
            if lim.rate > 0:
                wait = self._take(who, time.monotonic())
                if wait > 0:
                    return refuse(
                        429,
                        "rate",
                        f"over the rate of {lim.rate:g} requests/s",
                        **{"Retry-After": str(max(1, math.ceil(wait)))},
                    )
            size = request.content_length
            if size is not None and size > lim.max_body_bytes:
                return refuse(
                    413,
                    "too_large",
                    f"the body is {size} bytes, over the limit of {lim.max_body_bytes}",
                )
            if self.in_flight >= lim.max_in_flight:
                return refuse(
                    429,
                    "queue_full",
                    f"{self.in_flight} requests in flight, the most this server admits",
                    **{"Retry-After": "1"},
                )
            self.in_flight += 1
            self.idle.clear()
            try:
                return await asyncio.wait_for(handler(request), lim.timeout_s)
            except TimeoutError:
                return refuse(504, "timeout", f"no answer within {lim.timeout_s:g} s")
            except web.HTTPRequestEntityTooLarge:  # a chunked body over aiohttp's cap
                return refuse(
                    413, "too_large", f"the body is over the limit of {lim.max_body_bytes} bytes"
                )
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self.idle.set()

        return guard

    async def drain(self, bound_s: float) -> int:
        """Stop admitting; wait until nothing is in flight or ``bound_s`` passed. Returns
        how many requests were still in flight at the end."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), bound_s)
        return self.in_flight
