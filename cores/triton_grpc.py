"""``triton_grpc``: a client core for Triton Inference Server over gRPC, speaking the
TensorRT-LLM backend's tensor interface (``llmlib.deploy.triton.repo``), the path MLPerf
submitters use with Triton.

One core per server in ``--triton_server_urls`` (``host:port`` of its gRPC endpoint). Each
core has ``--triton_num_clients_per_server`` clients: each a gRPC channel with one open
``ModelStreamInfer`` stream (``TritonStream``), each in its own spawned process
(``llmlib.serving.procpool``) so one Python process's GIL is not the ceiling, or, with
``--triton_clients_in_process``, all in the harness's process. Requests go round-robin
over the clients and, with ``--triton_num_models_per_server`` > 1, over the models
``<name>_0 .. <name>_{N-1}`` the server loads. Every request is streamed (a decoupled model
answers only on a stream): ``streaming`` true for Server/SingleStream (one response per
token; the first one is the first token), false for Offline (one response with every
token). The end of a request is the ``triton_final_response`` parameter
(``enable_empty_final_response``). ``end_id``/``pad_id`` are the benchmark's EOS id unless
``--triton_end_id`` says otherwise.

The stream is read with the gRPC stub tritonclient generates (``service_pb2_grpc``), not
with tritonclient's ``start_stream``, whose callback gets an error without its request's
id. A failure is a record, never a retry: a response with an error fails the request it
names (``infer_response.id``), as does a response that cannot be read. A stream that ends
(the server gone) or an error with no request id takes the core down: every pending query
completes as failed; so does a client process that dies. Closing the
core cancels what is in flight (``stop_stream``). Health: the server is ready and so is
every model.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError, HealthCheckError, MissingDependencyError
from llmlib.serving.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.serving.procpool import Outbox, WorkerPool
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse, failed_response


@dataclass(frozen=True)
class TritonSettings(Section):
    group: ClassVar[str] = "triton"
    triton_server_urls: list[str] = setting(
        [], "comma list of Triton gRPC endpoints, host:port, one core each"
    )
    triton_model_name: str = setting("tensorrt_llm", "the model's name in Triton")
    triton_num_clients_per_server: int = setting(
        1,
        "gRPC clients per server, each with its own stream, each in its own process "
        "(unless --triton_clients_in_process)",
        minimum=1,
    )
    triton_clients_in_process: bool = setting(
        False, "run the clients in the harness's process (threads) rather than one process each"
    )
    triton_num_models_per_server: int = setting(
        1, "models per server (named <triton_model_name>_0..N-1 when more than one)", minimum=1
    )
    triton_end_id: str = setting(
        "auto",
        "end_id (and pad_id) sent with requests: auto (the benchmark's EOS id), none, or an id",
    )


# what a stream reports: (kind, request id, payload, time_ns); payload: int32 token ids for
# FIRST/FINAL (bytes when it crossed from a worker process), the reason for FAILED/BROKEN
FIRST, FINAL, FAILED, BROKEN = range(4)
Event = tuple[int, int, Any, int]


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise MissingDependencyError(
            "the triton_grpc core needs tritonclient: pip install -e .[triton]"
        ) from None
    return grpcclient


def end_id_for(cfg: Config) -> int:
    """``--triton_end_id``: ``auto`` is the benchmark's EOS id, ``none`` sends none (-1)."""
    end_id = TritonSettings.of(cfg).triton_end_id
    value = end_id.strip().lower()
    if value == "none":
        return -1
    if value == "auto":
        from llmlib.data.benchmarks import load_benchmark

        return load_benchmark(cfg.config_dir, cfg.benchmark).eos_id
    if not value.isdigit():
        raise ConfigError(
            f"--triton_end_id={end_id!r}: auto (the benchmark's EOS id), none, or a token id"
        )
    return int(value)


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
        g = _grpc()
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


@register_core("triton_grpc")
class TritonGrpcCore(LLMCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        s = TritonSettings.of(cfg)
        urls = s.triton_server_urls
        if not urls and cfg.launch_server != "triton":
            raise ConfigError(
                f"core_type {cls.name} needs --triton_server_urls (comma list of gRPC "
                "host:port, e.g. 127.0.0.1:8001) or --launch_server=triton"
            )
        for u in urls:
            host, _, port = str(u).removeprefix("grpc://").rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(f"--triton_server_urls: {u!r} is not host:port")
        if s.triton_num_clients_per_server < 1 or s.triton_num_models_per_server < 1:
            raise ConfigError("--triton_num_clients_per_server and _models_per_server: >= 1")
        end_id_for(cfg)
        _grpc()

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        cls.validate_config(cfg)
        return len(TritonSettings.of(cfg).triton_server_urls)

    def __init__(
        self, core_id: int, cfg: Config, callback: CompletionCallback | None = None
    ) -> None:
        self.validate_config(cfg)
        super().__init__(core_id, cfg, callback)
        s = TritonSettings.of(cfg)
        self.url = s.triton_server_urls[core_id].removeprefix("grpc://")
        name, n_models = s.triton_model_name, s.triton_num_models_per_server
        self.models = [name] if n_models == 1 else [f"{name}_{i}" for i in range(n_models)]
        self.end_id = end_id_for(cfg)
        self.n_clients = s.triton_num_clients_per_server
        self.in_process = s.triton_clients_in_process
        self.stall_s = float(cfg.stall_timeout_s)
        self._turn = itertools.count()
        self._closing = False
        self._health = _grpc().InferenceServerClient(self.url)
        self.streams: list[TritonStream] = []
        self._pool: WorkerPool | None = None
        if self.in_process:
            self.streams = [
                TritonStream(self.url, self.end_id, self._on_events, self.stall_s)
                for _ in range(self.n_clients)
            ]
        else:
            settings = {"url": self.url, "end_id": self.end_id, "models": self.models,
                        "stall_s": self.stall_s}  # fmt: skip
            self._pool = WorkerPool(
                f"triton-{core_id}", worker_main, [settings] * self.n_clients,
                self._on_events, self._fail,
            )  # fmt: skip

    # --- requests --------------------------------------------------------------------------
    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        n, m, turn = self.n_clients, len(self.models), self._turn
        if self._pool is None:
            for req in requests:  # round robin over clients, then models
                i = next(turn)  # (atomic: answers may enqueue from several threads)
                ids = np.asarray(req.input_tokens, dtype=np.int32)
                self.streams[i % n].send(req.request_id, ids, req.max_new_tokens,
                                         bool(req.stream), self.models[(i // n) % m])  # fmt: skip
            return
        batches: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
        for req in requests:  # the same order; one batch per client process
            i = next(turn)
            ids_bytes = np.asarray(req.input_tokens, dtype=np.int32).tobytes()
            batches[i % n].append(
                (req.request_id, ids_bytes, int(req.max_new_tokens), bool(req.stream), (i // n) % m)
            )
        for k, batch in enumerate(batches):
            if batch:
                self._pool.put(k, batch)

    def _on_events(self, events: list[Event]) -> None:
        """What the streams report (gRPC's thread, or the client processes' reader)."""
        cid = self.core_id
        out: list[LLMResponse] = []
        for kind, rid, payload, t in events:
            if kind in (FIRST, FINAL):
                if isinstance(payload, bytes):
                    payload = np.frombuffer(payload, dtype=np.int32)
                out.append(LLMResponse(rid, payload, kind == FINAL, t, cid))
            elif kind == FAILED:
                out.append(failed_response(rid, f"triton {self.url}: {payload}", t, cid))
            elif not self._closing:  # BROKEN: nothing pending here can be trusted to finish
                self._deliver(out)
                self._fail(f"triton {self.url}: {payload}")
                return
        if out:
            self._deliver(out)

    # --- health and shutdown ----------------------------------------------------------------
    def _health_check_impl(self) -> None:
        client = self._health
        try:
            if not client.is_server_ready():
                raise HealthCheckError(f"triton {self.url}: server not ready")
            for m in self.models:
                if not client.is_model_ready(m):
                    raise HealthCheckError(f"triton {self.url}: model {m!r} not ready")
        except HealthCheckError:
            raise
        except Exception as exc:
            raise HealthCheckError(f"triton {self.url}: {exc}") from exc

    def _close_impl(self) -> None:
        self._closing = True
        for stream in self.streams:
            stream.close()
        if self._pool is not None:
            self._pool.close()
        with contextlib.suppress(Exception):
            self._health.close()

    def report_notes(self) -> list[str]:
        where = "in this process" if self.in_process else "each in its own process"
        return [
            f"core {self.core_id}: triton {self.url}, models {', '.join(self.models)}; "
            f"{self.n_clients} gRPC stream clients, {where}; end_id {self.end_id}"
        ]


# --- a client process --------------------------------------------------------------------------
def worker_main(settings: dict[str, Any], inq: Any, outq: Any) -> None:
    """A client process: one stream; request batches from ``inq`` (None stops it: what is in
    flight is cancelled), events in batches to ``outq`` (token ids as bytes)."""
    box = Outbox(outq)

    def emit(events: list[Event]) -> None:
        box.emit([
            (k, rid, p.tobytes() if isinstance(p, np.ndarray) else p, t) for k, rid, p, t in events
        ])  # fmt: skip

    stream = TritonStream(settings["url"], settings["end_id"], emit, settings["stall_s"])
    models = settings["models"]
    try:
        while (batch := inq.get()) is not None:
            for rid, data, max_new, streaming, model in batch:
                stream.send(rid, np.frombuffer(data, dtype=np.int32), max_new, streaming,
                            models[model])  # fmt: skip
    finally:
        stream.close()
        box.close()
