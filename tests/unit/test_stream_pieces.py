"""The endpoint client reads a stream as it arrives, in pieces of any size (``iter_any``):
an event split across reads, CRLF line ends, a last line with no newline, with msgspec's
decoder or json's (without the http extra's msgspec). A raw server on 127.0.0.1 writes the
bytes exactly as each test cuts them."""

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from cores.openai import stream as stream_mod  # noqa: E402
from cores.openai.client import EndpointClient  # noqa: E402
from llmlib.serving.async_core import RequestFailed  # noqa: E402


def events(ids: list[int], eol: bytes = b"\n") -> bytes:
    out = b""
    for i in ids:
        obj = {"choices": [{"index": 0, "text": f"t{i}", "token_ids": [i]}]}
        out += b"data: " + json.dumps(obj).encode() + eol + eol
    return out + b"data: [DONE]" + eol + eol


async def serve_pieces(pieces: list[bytes]):
    async def answer(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")  # the body is small: read whatever came
            await asyncio.sleep(0.01)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Connection: close\r\n\r\n")  # fmt: skip
            for p in pieces:
                writer.write(p)
                await writer.drain()
                await asyncio.sleep(0.005)  # each piece its own read
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, asyncio.CancelledError):
            writer.transport.abort()  # (the client gave up on a garbled stream)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def ask(pieces: list[bytes]):
    server, url = await serve_pieces(pieces)
    client = EndpointClient(url, "completions", "m", 30.0, 4)
    await client.open()
    firsts: list[list[int]] = []
    try:
        got = await client.request(np.arange(4), 8, lambda ids: firsts.append(ids.tolist()))
        return got, firsts
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def cut(data: bytes, at: list[int]) -> list[bytes]:
    edges = [0, *at, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


@pytest.mark.parametrize("decoder", ["msgspec", "json"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_events_cut_anywhere_give_every_id_once(monkeypatch, decoder, eol):
    if decoder == "json":
        monkeypatch.setattr(stream_mod, "decode", json.loads)
    data = events([5, 6, 7, 8], eol)
    # mid-prefix, mid-JSON, between an event's two line ends, one byte at a time, and the
    # last line without its newline (a server that closes right after [DONE])
    pieces = cut(data[: -2 * len(eol)], [3, 40, 41, 42, 90, 91, 150])
    got, firsts = asyncio.run(ask(pieces))
    assert got.ids.tolist() == [5, 6, 7, 8]
    assert firsts == [[5]]


def test_garbage_mid_stream_fails_the_request_with_what_arrived(monkeypatch):
    data = events([5, 6]).replace(b"[DONE]", b"{not json")
    with pytest.raises(RequestFailed) as e:
        asyncio.run(ask(cut(data, [10, 70])))
    assert "not JSON in the stream" in str(e.value)
