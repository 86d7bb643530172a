"""A misbehaving OpenAI-compatible server for the fault suite (aiohttp, 127.0.0.1 only).

``python -m tests.faults.fault_server --mode MODE [--every K] [--port P]`` prints
``listening on http://127.0.0.1:PORT`` and serves ``/health``, ``/v1/models`` and streaming
``/v1/completions``. Every K-th request (K=1: every one) misbehaves as MODE says; the others
stream ``max_tokens`` token ids properly (2 ms apart) and end with ``[DONE]``. ``mix`` takes
the faults in turn, one per faulty request.

Modes: ``bad_json`` (a line that is not JSON after the first token), ``no_done`` (the
tokens, then the connection closes with no ``[DONE]``), ``http500`` (status 500 with an
error body), ``error_event`` (an ``error`` object after the first token), ``stall`` (the
first token, then nothing, the connection held open), ``zero_tokens`` (``[DONE]`` with no
token), ``truncated`` (the first token, then the chunked body cut off mid-chunk), ``silent``
(the request is accepted and never answered).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys

from aiohttp import web

FAULTS = ("bad_json", "no_done", "http500", "error_event", "stall", "zero_tokens",
          "truncated", "silent")  # fmt: skip


def chunk(ids: list[int]) -> bytes:
    body = {"choices": [{"index": 0, "text": "t" * len(ids), "token_ids": ids}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class FaultServer:
    def __init__(self, mode: str, every: int) -> None:
        self.mode, self.every = mode, every
        self.count = itertools.count(1)
        self.turn = itertools.cycle(FAULTS)
        # connection (its transport, held so no later one takes its id) -> its requests so
        # far; not the client's port: a port can be given again to a later connection (where
        # a network stack picks ephemeral ports at random), whose first request would then
        # read as a second one
        self.served: dict[object, int] = {}

    def fault_for(self, n: int) -> str | None:
        if n % self.every:
            return None
        return next(self.turn) if self.mode == "mix" else self.mode

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fault = self.fault_for(next(self.count))
        n_out = max(2, int(body.get("max_tokens", 16)))
        prompt = body.get("prompt") or [1]
        ids = [(int(prompt[-1]) + 1 + k) % 2000 + 3 for k in range(n_out)]
        if fault == "silent":
            await asyncio.sleep(3600)
        if self.mode == "stale":  # a kept-alive connection closed as its second request came
            assert request.transport is not None
            conn = request.transport
            k = self.served[conn] = self.served.get(conn, 0) + 1
            fault = "hangup" if k == 2 else None
        if fault == "hangup":  # the connection closed before any answer
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault == "http500":
            return web.json_response({"error": {"message": "injected 500"}}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if fault == "zero_tokens":
            await resp.write(b"data: [DONE]\n\n")
            return resp
        await resp.write(chunk(ids[:1]))
        if fault == "bad_json":
            await resp.write(b"data: {not json\n\n")
        elif fault == "error_event":
            await resp.write(b'data: {"error": {"message": "injected error event"}}\n\n')
        elif fault == "stall":
            await asyncio.sleep(3600)
        elif fault == "truncated":
            # a chunk header that promises more bytes than come, then the socket closes
            assert request.transport is not None
            request.transport.write(b'400\r\ndata: {"choi')
            request.transport.close()
            return resp
        for k in range(1, n_out):
            await asyncio.sleep(0.002)
            await resp.write(chunk(ids[k : k + 1]))
        if fault == "no_done":
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "faulty", "object": "model"}]})


async def serve(mode: str, every: int, port: int) -> None:
    s = FaultServer(mode, every)
    app = web.Application()
    app.router.add_get("/health", s.health)
    app.router.add_get("/v1/models", s.models)
    app.router.add_post("/v1/completions", s.completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", required=True, choices=(*FAULTS, "hangup", "stale", "mix", "none"))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.mode, max(1, a.every), a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
