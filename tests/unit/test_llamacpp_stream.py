"""The endpoint client's reading of llama.cpp's native ``/completion``: a stream's events
(token ids per event, the last with ``stop`` and the count of generated tokens) and an
unstreamed answer, and what is refused as garbage."""

import json

import numpy as np
import pytest

from cores.openai.client import EndpointClient, _Stream
from cores.openai.llamacpp import native_ids
from llmlib.serving.async_core import RequestFailed

URL = "http://127.0.0.1:1"


def event(**fields):
    return b"data: " + json.dumps(fields).encode()


def test_native_events_give_ids_in_order_and_the_generated_count():
    s = _Stream()
    assert not s.feed(event(content="", tokens=[], stop=False))  # a begin event: no output
    assert s.feed(event(content=" a", tokens=[7], stop=False, tokens_predicted=1))
    assert s.feed(event(content="\u00e9", tokens=[9], stop=False, tokens_predicted=3))
    assert not s.feed(event(content="", tokens=[], stop=True, tokens_predicted=3))
    assert s.done and s.ids == [7, 9] and s.predicted == 3  # one id was not streamed
    assert s.texts == [" a", "\u00e9"] and s.chunk_ids == [1, 1]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (event(tokens=["7"], stop=False), "bad token ids"),
        (event(tokens=[-1], stop=False), "bad token ids"),
        (event(tokens=7, stop=False), "bad token ids"),
        (b"data: [1, 2]", "not a JSON object"),
        (event(error={"code": 500, "message": "boom"}), "server error"),
    ],
)
def test_native_stream_garbage_fails_the_request(line, says):
    with pytest.raises(RequestFailed, match=says):
        _Stream().feed(line)


def test_unstreamed_answer_gives_every_id():
    raw = json.dumps({"content": "x", "tokens": [5, 6, 7], "stop": True, "tokens_predicted": 3})
    assert native_ids(raw.encode(), URL).tolist() == [5, 6, 7]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[5, 6]", "not a JSON object"),
        (b'{"content": "x", "stop": true}', "no token ids"),
        (b'{"tokens": [5, "6"], "stop": true}', "no token ids"),
        (b'{"tokens": [5, 6], "tokens_predicted": 3}', "says it generated 3"),
        (b'{"error": {"message": "context full"}}', "server error"),
    ],
)
def test_unstreamed_garbage_fails_the_request(raw, says):
    with pytest.raises(RequestFailed, match=says):
        native_ids(raw, URL)


def test_native_body_sends_ids_and_asks_for_ids_back():
    client = EndpointClient(URL, "llamacpp", "", 5.0, 1)
    assert client.path == "/completion"
    body = client.body(np.array([1, 2, 3], dtype=np.uint32), 16, stream=False)
    assert body == {
        "prompt": [1, 2, 3], "n_predict": 16, "temperature": 0.0, "stream": False,
        "return_tokens": True, "samplers": ["top_k"], "top_k": 1,  # greedy, and nothing else
    }  # fmt: skip
    auto = EndpointClient(URL, "auto", "", 5.0, 1)
    assert auto.path == "/v1/completions" and "prompt" in auto.body(np.array([1]), 4)


def slow_llama(delay_s, state):
    """A llama.cpp look-alike: ``/completion`` answers (unstreamed) after ``delay_s``;
    ``/health`` answers 200 while ``state["healthy"]``, else never."""
    import asyncio

    from aiohttp import web

    async def completion(request):
        n = (await request.json())["n_predict"]
        await asyncio.sleep(delay_s)
        return web.json_response({"tokens": list(range(5, 5 + n)), "tokens_predicted": n})

    async def health(request):
        if not state["healthy"]:
            await asyncio.sleep(3600)
        return web.json_response({"status": "ok"})

    async def models(request):
        return web.json_response({"data": [{"id": "m", "owned_by": "llamacpp"}]})

    app = web.Application()
    app.add_routes([web.post("/completion", completion), web.get("/health", health),
                    web.get("/v1/models", models)])  # fmt: skip
    return app


@pytest.mark.parametrize("healthy", [True, False])
def test_a_quiet_spell_is_a_stall_only_when_the_server_does_not_answer_health(healthy):
    """Unstreamed requests send no byte until done: 3 s of quiet against a 1 s stall limit
    fails them only where ``/health`` does not answer either (a stopped server)."""
    import asyncio

    from aiohttp import web

    state = {"healthy": True}

    async def go():
        runner = web.AppRunner(slow_llama(3.0, state), shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = EndpointClient(f"http://127.0.0.1:{port}", "auto", "", 30.0, 2, stall_s=1.0)
        await client.open()
        try:
            await client.health()
            state["healthy"] = healthy
            prompt = np.array([1, 2], dtype=np.uint32)
            return client, await asyncio.gather(
                *(client.request(prompt, 4, None) for _ in range(2)), return_exceptions=True
            )
        finally:
            await client.close()
            await runner.cleanup()

    client, done = asyncio.run(go())
    assert client.api == "llamacpp"
    if healthy:
        assert [d.ids.tolist() for d in done] == [[5, 6, 7, 8]] * 2
    else:
        assert all(isinstance(d, RequestFailed) and "stalled or stopped" in str(d) for d in done)


@pytest.mark.parametrize(
    ("events", "says"),
    [
        # the server closes the stream before its stop event
        ([{"tokens": [7], "stop": False}], "ended before its last event"),
        # the stop event counts fewer tokens than were streamed: garbage
        ([{"tokens": [7], "stop": False}, {"tokens": [8], "stop": False},
          {"tokens": [], "stop": True, "tokens_predicted": 1}], "says it generated 1"),
    ],
)  # fmt: skip
def test_a_native_stream_cut_short_or_miscounted_fails_the_request(events, says):
    import asyncio

    from aiohttp import web

    async def completion(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for e in events:
            await resp.write(b"data: " + json.dumps(e).encode() + b"\n\n")
        await resp.write_eof()
        return resp

    async def go():
        app = web.Application()
        app.add_routes([web.post("/completion", completion)])
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = EndpointClient(f"http://127.0.0.1:{port}", "llamacpp", "m", 30.0, 2)
        await client.open()
        try:
            return await client.request(np.array([1, 2], dtype=np.uint32), 4, lambda ids: None)
        finally:
            await client.close()
            await runner.cleanup()

    with pytest.raises(RequestFailed, match=says):
        asyncio.run(go())
