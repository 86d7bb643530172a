"""One client of the triton_grpc core: a gRPC channel with one open ``ModelStreamInfer``
stream (``TritonStream``), in the harness's process or in a client process of its own
(``worker_main``)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from llmlib.errors import MissingDependencyError
from llmlib.serving.procpool import Outbox

# what a stream reports: (kind, request id, payload, time_ns); payload: int32 token ids for
# FIRST/FINAL (bytes when it crossed from a worker process, which adds a fifth item: when
# the worker received the request), the reason for FAILED/BROKEN
FIRST, FINAL, FAILED, BROKEN = range(4)
Event = tuple[int, int, Any, int]


def grpc_module() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise MissingDependencyError(
            "the triton_grpc core needs tritonclient: pip install -e .[triton]"
        ) from None
    return grpcclient


class TritonStream:
    """One gRPC channel to the server with one open ``ModelStreamInfer`` stream (the
    protocol under tritonclient's ``start_stream``, read here directly: tritonclient's
    stream callback drops the request id of an error, and the raw response carries it).
    ``send`` queues a request; a reader thread turns every response into events (``FIRST``
    for a streamed request's first token, ``FINAL`` with all of its tokens, ``FAILED`` for
    a request's error or a response that cannot be read, ``BROKEN`` when the stream ends
    or an error names no request) handed to ``emit``."""

    def __init__(
        self, url: str, end_id: int, emit: Callable[[list[Event]], None], stall_s: float = 0.0
    ) -> None:
        g = grpc_module()
        import grpc

        self._pb = g.service_pb2
        self._rpc_error = grpc.RpcError
        self.url, self.end_id, self._emit = url, end_id, emit
        self._lock = threading.Lock()
        self._live: dict[int, tuple[list[np.ndarray], list[bool]]] = {}  # tokens, [want first]
        self._closing = False
        self._closed = threading.Event()
        big = 2**31 - 1  # tritonclient's message size limits
        self._channel = grpc.insecure_channel(
            url, options=[("grpc.max_send_message_length", big),
                          ("grpc.max_receive_message_length", big)],
        )  # fmt: skip
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stub = g.service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._call = stub.ModelStreamInfer(iter(self._requests.get, None))
        self._reader = threading.Thread(target=self._read_all, name="triton-stream", daemon=True)
        self._reader.start()
        self.stall_s = stall_s
        self._sent: dict[int, float] = {}  # open request -> time.monotonic() it was sent
        self._moved: dict[int, float] = {}  # answering request -> its last response's time
        self._last_response = 0.0
        self._watch: threading.Thread | None = None
        if stall_s > 0:
            self._watch = threading.Thread(target=self._watch_stall, name="triton-stall",
                                           daemon=True)  # fmt: skip
            self._watch.start()

    def _request(self, rid: int, ids: np.ndarray, max_new: int, stream: bool, model: str) -> Any:
        pb = self._pb
        req = pb.ModelInferRequest(model_name=model, id=str(rid))
        req.parameters["triton_enable_empty_final_response"].bool_param = True
        ids = np.asarray(ids, dtype=np.int32)
        tensors = [
            ("input_ids", "INT32", [1, len(ids)], ids.tobytes()),
            ("input_lengths", "INT32", [1, 1], np.int32(len(ids)).tobytes()),
            ("request_output_len", "INT32", [1, 1], np.int32(max_new).tobytes()),
            ("streaming", "BOOL", [1, 1], bytes([stream])),
            ("beam_width", "INT32", [1, 1], np.int32(1).tobytes()),
        ]
        if self.end_id >= 0:
            end = np.int32(self.end_id).tobytes()
            tensors += [("end_id", "INT32", [1, 1], end), ("pad_id", "INT32", [1, 1], end)]
        for name, dtype, shape, data in tensors:
            t = req.inputs.add()
            t.name, t.datatype = name, dtype
            t.shape.extend(shape)
            req.raw_input_contents.append(data)
        return req

    def send(self, rid: int, ids: np.ndarray, max_new: int, stream: bool, model: str) -> None:
        with self._lock:
            self._live[rid] = ([], [stream])
            self._sent[rid] = time.monotonic()
        try:
            self._requests.put(self._request(rid, ids, max_new, stream, model))
        except Exception as exc:  # a request that could not be built fails, alone
            self._forget(rid)
            self._emit([(FAILED, rid, f"send failed: {exc!r}", time.perf_counter_ns())])

    def _forget(self, rid: int) -> None:
        with self._lock:
            self._live.pop(rid, None)
            self._sent.pop(rid, None)
            self._moved.pop(rid, None)

    def _watch_stall(self) -> None:
        """A server that sent nothing for ``stall_s`` while requests were open (and the
        oldest has waited that long) is stalled or stopped: the stream is reported broken
        (its core fails what it holds). A request whose answer began and then stopped for
        ``stall_s`` fails alone. The thread then waits for close: in process it has
        delivered to LoadGen, so it must outlive the test (``llmlib.serving.core``)."""
        period, broken = min(1.0, self.stall_s / 4), False
        while not self._closed.wait(period):
            with self._lock:
                if broken or not self._sent:
                    continue
                now = time.monotonic()
                stuck = [r for r, t in self._moved.items() if now - t > self.stall_s]
                for r in stuck:
                    self._live.pop(r, None)
                    self._sent.pop(r, None)
                    self._moved.pop(r, None)
                n = len(self._sent)
                oldest = min(self._sent.values(), default=now)
                quiet = now - max(self._last_response, oldest)
            if stuck:
                why = f"its answer stopped for over {self.stall_s:g} s (--stall_timeout_s)"
                self._emit([(FAILED, r, why, time.perf_counter_ns()) for r in stuck])
            if quiet > self.stall_s:
                broken = True
                why = (
                    f"no response for over {self.stall_s:g} s with {n} requests open: the "
                    "server is stalled or stopped (--stall_timeout_s)"
                )
                self._emit([(BROKEN, -1, why, time.perf_counter_ns())])

    def _read_all(self) -> None:
        """The reader thread: every response of the stream, then how it ended."""
        why = "the server closed the stream"
        try:
            for resp in self._call:
                self._on_response(resp)
        except self._rpc_error as exc:
            why = f"stream ended: {exc.code().name}: {exc.details()}"
        if not self._closing:
            self._emit([(BROKEN, -1, why, time.perf_counter_ns())])
        # in process, this thread delivered to LoadGen: it must outlive the test (LLMCore)
        self._closed.wait()

    def _on_response(self, resp: Any) -> None:
        """One response. Whatever goes wrong reading it fails its request rather than
        ending the reader thread (which would leave every request on the stream waiting)."""
        now = time.perf_counter_ns()
        self._last_response = time.monotonic()
        ident = resp.infer_response.id
        try:
            self._read(resp, now)
        except Exception as exc:
            if not ident.lstrip("-").isdigit():  # not even the request id
                self._emit([(BROKEN, -1, f"unreadable response: {exc!r}", now)])
                return
            self._forget(int(ident))
            self._emit([(FAILED, int(ident), f"unreadable response: {exc!r}", now)])

    def _read(self, resp: Any, now: int) -> None:
        r = resp.infer_response
        if resp.error_message:
            if not r.id.lstrip("-").isdigit():  # an error of the stream, not of a request
                self._emit([(BROKEN, -1, resp.error_message, now)])
                return
            self._forget(int(r.id))
            self._emit([(FAILED, int(r.id), resp.error_message, now)])
            return
        rid = int(r.id)
        final = r.parameters["triton_final_response"].bool_param
        tokens = None
        outputs = {o.name: i for i, o in enumerate(r.outputs)}
        if "output_ids" in outputs:
            tokens = np.frombuffer(r.raw_output_contents[outputs["output_ids"]], np.int32)
            if "sequence_length" in outputs:
                seq = np.frombuffer(r.raw_output_contents[outputs["sequence_length"]], np.int32)
                tokens = tokens[: int(seq[0])]
        with self._lock:
            state = self._live.get(rid)
            if state is None:  # failed or cancelled already
                return
            got, want_first = state
            if tokens is not None and len(tokens):
                got.append(tokens)
            send_first = want_first[0] and bool(got)
            if send_first:
                want_first[0] = False
            if final:
                del self._live[rid]
                self._sent.pop(rid, None)
                self._moved.pop(rid, None)
            else:
                self._moved[rid] = self._last_response
        events: list[Event] = []
        if send_first:
            events.append((FIRST, rid, got[0][:1], now))
        if final:
            if got:
                events.append((FINAL, rid, np.concatenate(got), now))
            else:
                events.append((FAILED, rid, "the final response came with no tokens", now))
        if events:
            self._emit(events)

    def close(self) -> None:
        """Cancel the stream (the server cancels what is in flight on it) and close."""
        self._closing = True
        self._closed.set()
        with contextlib.suppress(Exception):
            self._call.cancel()
        self._requests.put(None)
        with contextlib.suppress(Exception):
            self._channel.close()
        self._reader.join(5)
        if self._watch is not None:
            self._watch.join(5)


# --- a client process --------------------------------------------------------------------------
def worker_main(settings: dict[str, Any], inq: Any, outq: Any) -> None:
    """A client process: one stream; request batches from ``inq`` (None stops it: what is in
    flight is cancelled), events in batches to ``outq`` (token ids as bytes), each with the
    time this worker received its request, on this worker's clock (0 when unknown): a
    worker on another host has another clock, so its core keeps durations, not times."""
    box = Outbox(outq)
    received: dict[int, int] = {}  # open request -> when it came, on this worker's clock

    def emit(events: list[Event]) -> None:
        out = []
        for k, rid, p, t in events:
            t0 = received.get(rid, 0) if k == FIRST else received.pop(rid, 0)
            out.append((k, rid, p.tobytes() if isinstance(p, np.ndarray) else p, t, t0))
        box.emit(out)

    stream = TritonStream(settings["url"], settings["end_id"], emit, settings["stall_s"])
    models = settings["models"]
    try:
        while (batch := inq.get()) is not None:
            now = time.perf_counter_ns()
            for rid, data, max_new, streaming, model in batch:
                received[rid] = now
                stream.send(rid, np.frombuffer(data, dtype=np.int32), max_new, streaming,
                            models[model])  # fmt: skip
    finally:
        stream.close()
        box.close()
