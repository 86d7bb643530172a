"""A server cheaper than the client, and clients driven against it, for ``bench-client
--live`` (issue 23: what an endpoint client costs with its sockets, aiohttp and event loop,
next to a peer client's cost on the same streams).

``ReplayServer`` (a child process: ``python -m harness.bench.replay serve FILE``) answers
every POST with the next of the recorded SSE streams in ``FILE`` (round robin), as HTTP/1.1
chunked, one chunk an event, yielding to the other connections between events as a server
that streams a batch's tokens step by step does; its connections are kept alive. It counts
the events it wrote and its own CPU time (``GET /stats``); any other GET is answered with a
model list (``/health``, ``/v1/models``: the ``openai`` core can run against it). Nothing
else is parsed: the request's body is read and dropped.

``client`` (``python -m harness.bench.replay client KIND URL ...``, a child process each)
sends ``--requests`` streamed requests at ``--concurrency`` with one client and prints one
JSON line: the requests and events it completed, its CPU time and its wall time over them
(its imports and start-up excluded). ``llmlib``: the endpoint client of the ``openai`` core
(``cores.openai.client.EndpointClient``, token ids read from each event); ``vllm``: vLLM's
benchmark client (``async_request_openai_completions`` from ``vllm bench serve``, the vllm
extra), which reads chunks (``iter_any``) and keeps the text.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")  # fmt: skip


def cpu_s() -> float:
    """This process's CPU time, user and system, in seconds."""
    return time.process_time()


async def serve(streams: list[list[bytes]], port: int) -> None:
    state = {"next": 0, "events": 0, "requests": 0}
    chunked = [[b"%x\r\n%s\r\n" % (len(x) + 2, x + b"\n\n") for x in s] for s in streams]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET "):  # its counters; health and a model for cores
                    path = head.split(b" ", 2)[1]
                    body = json.dumps(
                        {**state, "cpu_s": cpu_s()} if path == b"/stats"
                        else {"data": [{"id": "replay", "object": "model", "owned_by": "replay"}]}
                    ).encode()  # fmt: skip
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                    await writer.drain()
                    continue
                events = chunked[state["next"] % len(chunked)]
                state["next"] += 1
                writer.write(HEAD)
                for chunk in events:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)  # the other streams' next events between ours
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                state["events"] += len(events)
                state["requests"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # the shared port (several processes on it: the kernel spreads connections) and this
    # process's own, for its counters
    server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=1024,
                                        reuse_port=True)  # fmt: skip
    own = await asyncio.start_server(answer, "127.0.0.1", 0)
    shared, mine = (x.sockets[0].getsockname()[1] for x in (server, own))
    print(f"replay server: http://127.0.0.1:{shared} http://127.0.0.1:{mine}", flush=True)
    async with server, own:
        await server.serve_forever()


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps a child (and what it starts) on ``cpus`` (None: no pin)."""
    return None if not cpus else (lambda: os.sched_setaffinity(0, cpus))


class ReplayServer:
    """The replay server as ``processes`` child processes on one free port of 127.0.0.1
    (``SO_REUSEPORT``), so that a machine with cores to spare can serve more clients than
    one process can, on ``cpus`` where given (the client's kept off them); ``stats`` sums
    their counters."""

    def __init__(self, streams: list[list[bytes]], folder: Path, processes: int = 1,
                 cpus: set[int] | None = None) -> None:  # fmt: skip
        path = folder / "streams.pkl"
        path.write_bytes(pickle.dumps(streams))
        self.procs: list[subprocess.Popen[str]] = []
        self.own: list[str] = []
        port = "0"
        try:
            for _ in range(processes):
                p = subprocess.Popen(
                    [sys.executable, "-m", "harness.bench.replay", "serve", str(path), port],
                    stdout=subprocess.PIPE, text=True, preexec_fn=pinned(cpus),
                )  # fmt: skip
                self.procs.append(p)
                assert p.stdout is not None
                line = p.stdout.readline()
                if not line.startswith("replay server: "):
                    raise RuntimeError(f"the replay server did not start: {line!r}")
                self.url, own = line.split(": ", 1)[1].split()
                self.own.append(own)
                port = self.url.rsplit(":", 1)[1]
        except BaseException:
            self.stop()
            raise

    def stats(self) -> dict[str, Any]:
        """Events and requests written, and CPU seconds, summed over the processes."""
        import urllib.request

        total: dict[str, Any] = {"events": 0, "requests": 0, "cpu_s": 0.0}
        for url in self.own:
            with urllib.request.urlopen(url + "/stats", timeout=30) as r:
                one = json.loads(r.read())
            for k in total:
                total[k] += one[k]
        return total

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


async def drive(kind: str, url: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    import aiohttp
    import numpy as np

    prompt = list(range(1, 33))
    done = {"requests": 0, "events": 0, "failed": 0}
    if kind == "llmlib":
        from cores.openai.client import EndpointClient

        client = EndpointClient(url, "completions", "replay", 600.0, concurrency)
        await client.open()
        arr = np.asarray(prompt, dtype=np.int64)

        async def one() -> None:
            c = await client.request(arr, max_tokens, lambda ids: None)
            done["events"] += len(c.ids)

        close = client.close
    elif kind == "vllm":
        from vllm.benchmarks.lib.endpoint_request_func import (
            RequestFuncInput,
            async_request_openai_completions,
        )

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        inp = RequestFuncInput(prompt=prompt, api_url=url + "/v1/completions", prompt_len=32,
                               output_len=max_tokens, model="replay")  # fmt: skip

        async def one() -> None:
            out = await async_request_openai_completions(inp, session)
            if not out.success:
                raise RuntimeError(out.error.splitlines()[-1] if out.error else "failed")
            done["events"] += len(out.itl) + 1

        close = session.close
    else:
        raise SystemExit(f"client kind {kind!r}: llmlib or vllm")

    left = iter(range(requests))

    async def lane() -> None:
        for _ in left:
            try:
                await one()
                done["requests"] += 1
            except Exception:
                done["failed"] += 1

    await one()  # a first request outside the timing: connections, the first parse
    done["events"] = 0
    print("ready", flush=True)  # the parent reads the server's counters, then says go
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    c0, w0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    cpu, wall = cpu_s() - c0, time.perf_counter() - w0
    await close()
    return {**done, "cpu_s": cpu, "wall_s": wall}


def run_client(
    kind: str, server: ReplayServer, requests: int, concurrency: int, max_tokens: int
) -> dict[str, Any]:
    """One client in a child process of its own, timed between two reads of the server's
    counters: its JSON line, with the server's CPU time and events over the same span."""
    p = subprocess.Popen(
        [sys.executable, "-m", "harness.bench.replay", "client", kind, server.url,
         str(requests), str(concurrency), str(max_tokens)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdin is not None and p.stdout is not None
    try:
        line = p.stdout.readline()
        if line.strip() == "ready":
            s0 = server.stats()
            p.stdin.write("go\n")
            p.stdin.flush()
            line = p.stdout.readline()
            s1 = server.stats()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0 or not line.startswith("{"):
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {kind} client failed: {tail}")
    res = dict(json.loads(line))
    res["server_cpu_s"] = s1["cpu_s"] - s0["cpu_s"]
    res["server_events"] = s1["events"] - s0["events"]
    return res


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        streams = pickle.loads(Path(argv[1]).read_bytes())
        asyncio.run(serve(streams, int(argv[2])))
        return 0
    if argv[:1] == ["client"]:
        kind, url, requests, concurrency, max_tokens = argv[1:6]
        res = asyncio.run(drive(kind, url, int(requests), int(concurrency), int(max_tokens)))
        print(json.dumps(res), flush=True)
        return 0
    print("usage: python -m harness.bench.replay serve FILE PORT | client KIND URL N C T")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
