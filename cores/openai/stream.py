"""What one response stream of the ``openai`` core's endpoint client has said so far, and
when: SSE events of the OpenAI APIs (text, token ids, reasoning deltas) and of llama.cpp's
native ``/completion`` read into output token ids and text, with the times the stall watch
and the reasoning split read (``cores.openai.client``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cores.openai.llamacpp import token_ids
from llmlib.serving.async_core import RequestFailed

# an event's JSON: msgspec's decoder (the http extra) takes 0.9 us for a token's event where
# json.loads takes 4.4 (measured here), and decoding is most of what a client does an event
decode: Callable[[bytes], Any]
try:
    from msgspec.json import Decoder

    decode = Decoder().decode
except ImportError:  # the same answers, slower
    decode = json.loads

# where a reasoning model's answer begins in the text of a stream that does not separate them
# (the completions API): DeepSeek-R1 ends its thinking with </think>; gpt-oss (harmony)
# opens its final channel with <|channel|>final<|message|>
ANSWER_MARKERS = ("</think>", "<|channel|>final<|message|>")


class Stream:
    """What one SSE stream has said so far, and when (for the stall watch)."""

    __slots__ = (
        "ids", "texts", "server_ids", "done", "first_ids", "first_text_len",
        "started", "last", "task", "stalled", "times", "chunk_ids", "reasoning_chunks",
        "predicted", "whole",
    )  # fmt: skip

    def __init__(self, started: float = 0.0, task: asyncio.Task[Any] | None = None) -> None:
        self.started, self.last = started, 0.0  # time.monotonic(); last: 0 until a byte
        self.task = task
        self.stalled: str | None = None
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.server_ids = False
        self.done = False
        self.first_ids: np.ndarray | None = None
        self.first_text_len = 0
        # per output chunk (parallel to texts): arrival time, token ids it carried
        self.times: list[int] = []
        self.chunk_ids: list[int] = []
        self.reasoning_chunks = 0  # chunks the server marked as reasoning (leading ones)
        self.predicted: int | None = None  # llama.cpp's count of generated tokens, at the end
        self.whole = False  # an unstreamed request (no byte until it is done)

    def answer_start(self) -> int | None:
        """Index of the first answer chunk: after the chunks the server marked as reasoning,
        else after the one that completes an answer marker; None when the stream had no
        reasoning."""
        if self.reasoning_chunks:
            return self.reasoning_chunks
        text = "".join(self.texts)
        ends = [text.find(m) + len(m) for m in ANSWER_MARKERS if m in text]
        if not ends:
            return None
        end, seen = min(ends), 0
        for k, t in enumerate(self.texts):
            seen += len(t)
            if seen >= end:
                return k + 1
        return len(self.texts)

    def stall(self, why: str) -> None:
        """Fail this request (its task is cancelled; ``request`` raises ``why``)."""
        if self.stalled is None and self.task is not None:
            self.stalled = why
            self.task.cancel()

    def stall_failure(self, partial: np.ndarray | None = None) -> RequestFailed | None:
        """In the request's task, cancelled: the failure to raise where the stall watch
        cancelled it (the task's cancellation is undone), None for a real cancellation."""
        if self.stalled is None:
            return None
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the stall watch cancelled it: a failure, not a shutdown
        return RequestFailed(self.stalled, partial)

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
            obj = decode(data)
        except ValueError:  # (json's and msgspec's decode errors both)
            raise RequestFailed(f"not JSON in the stream: {data[:100]!r}") from None
        if not isinstance(obj, dict):
            raise RequestFailed(f"not a JSON object in the stream: {data[:100]!r}")
        if obj.get("error"):
            raise RequestFailed(f"server error: {obj['error']}")
        if "choices" not in obj and "stop" in obj:
            return self.feed_native(obj)
        got = False
        for c in obj.get("choices") or ():
            ids = c.get("token_ids")
            text = c.get("text")
            delta = c.get("delta") or {}
            thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if text is None:
                text = delta.get("content") or ""
            if not (ids or text or thought):
                continue
            if ids:
                self.server_ids = True
                self.ids.extend(ids)
            # (a chunk with reasoning and answer text both counts as answer)
            if thought and not text and self.reasoning_chunks == len(self.texts):
                self.reasoning_chunks += 1
            self.texts.append(text or thought)
            self.chunk_ids.append(len(ids) if ids else 0)
            self.times.append(time.perf_counter_ns())
            got = True
        return got

    def feed_native(self, obj: dict[str, Any]) -> bool:
        """One event of llama.cpp's native stream: ``tokens`` and ``content`` per event, the
        last with ``stop`` true and the count of generated tokens (no ``[DONE]``). llama.cpp
        streams no event for a token that leaves the text inside a UTF-8 character (its id
        is lost to the stream; the next event's text holds its bytes): ``predicted`` minus
        the ids streamed counts those."""
        ids = obj.get("tokens") or []
        if not token_ids(ids):
            raise RequestFailed(f"bad token ids in the stream: {str(ids)[:100]}")
        if obj.get("stop") is True:
            self.done = True
            n = obj.get("tokens_predicted")
            self.predicted = n if type(n) is int else None
        if not ids:
            return False
        self.server_ids = True
        self.ids.extend(ids)
        self.texts.append(str(obj.get("content") or ""))
        self.chunk_ids.append(len(ids))
        self.times.append(time.perf_counter_ns())
        return True
