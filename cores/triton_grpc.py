"""``triton_grpc``: a client core for Triton Inference Server over gRPC, speaking the
TensorRT-LLM backend's tensor interface (``llmlib.triton_repo``), the path MLPerf
submitters use with Triton.

One core per server in ``--triton_server_urls`` (``host:port`` of its gRPC endpoint). Each
core has ``--triton_num_clients_per_server`` clients: each a ``tritonclient.grpc`` client
with one open stream (``start_stream``), each in its own spawned process
(``llmlib.procpool``) so one Python process's GIL is not the ceiling, or, with
``--triton_clients_in_process``, all in the harness's process. Requests go round-robin
over the clients and, with ``--triton_num_models_per_server`` > 1, over the models
``<name>_0 .. <name>_{N-1}`` the server loads. Every request is streamed (a decoupled model
answers only on a stream): ``streaming`` true for Server/SingleStream (one response per
token; the first one is the first token), false for Offline (one response with every
token). The end of a request is the ``triton_final_response`` parameter
(``enable_empty_final_response``). ``end_id``/``pad_id`` are the benchmark's EOS id unless
``--triton_end_id`` says otherwise.

A failure is a record, never a retry: a response with an error fails its request (the
Python-backend model names the request in its message, ``request <id>:``; tritonclient's
stream callback gives no request id with an error). An error that names no request (a
broken stream, the server gone, or a backend that does not name it) takes the core down:
every pending query completes as failed; so does a client process that dies. Closing the
core cancels what is in flight (``stop_stream``). Health: the server is ready and so is
every model.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llmlib.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.errors import ConfigError, HealthCheckError, MissingDependencyError
from llmlib.procpool import Outbox, WorkerPool
from llmlib.request import LLMRequest, LLMResponse, failed_response

_NAMED = re.compile(r"request (-?\d+):")

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


def end_id_for(cfg: Any) -> int:
    """``--triton_end_id``: ``auto`` is the benchmark's EOS id, ``none`` sends none (-1)."""
    value = str(cfg.triton_end_id).strip().lower()
    if value == "none":
        return -1
    if value == "auto":
        from llmlib.workloads import load_benchmark

        return load_benchmark(cfg.config_dir, cfg.benchmark).eos_id
    if not value.isdigit():
        raise ConfigError(
            f"--triton_end_id={cfg.triton_end_id!r}: auto (the benchmark's EOS id), none, "
            "or a token id"
        )
    return int(value)


class TritonStream:
    """One ``tritonclient.grpc`` client with one open stream. ``send`` puts a request on
    the stream; every response is turned into events (``FIRST`` for a streamed request's
    first token, ``FINAL`` with all of its tokens, ``FAILED`` for a request's error,
    ``BROKEN`` for an error that names no request) handed to ``emit`` from gRPC's thread."""

    def __init__(self, url: str, end_id: int, emit: Callable[[list[Event]], None]) -> None:
        self._g = _grpc()
        self.url, self.end_id, self._emit = url, end_id, emit
        self._lock = threading.Lock()
        self._live: dict[int, tuple[list[np.ndarray], list[bool]]] = {}  # tokens, [want first]
        self.client = self._g.InferenceServerClient(url)
        self.client.start_stream(callback=self._on_result)

    def _inputs(self, ids: np.ndarray, max_new: int, stream: bool) -> list[Any]:
        g = self._g

        def tensor(name: str, arr: np.ndarray, dtype: str) -> Any:
            t = g.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            return t

        ids = np.asarray(ids, dtype=np.int32).reshape(1, -1)
        out = [
            tensor("input_ids", ids, "INT32"),
            tensor("input_lengths", np.array([[ids.shape[1]]], np.int32), "INT32"),
            tensor("request_output_len", np.array([[max_new]], np.int32), "INT32"),
            tensor("streaming", np.array([[stream]], bool), "BOOL"),
            tensor("beam_width", np.array([[1]], np.int32), "INT32"),
        ]
        if self.end_id >= 0:
            out.append(tensor("end_id", np.array([[self.end_id]], np.int32), "INT32"))
            out.append(tensor("pad_id", np.array([[self.end_id]], np.int32), "INT32"))
        return out

    def send(self, rid: int, ids: np.ndarray, max_new: int, stream: bool, model: str) -> None:
        with self._lock:
            self._live[rid] = ([], [stream])
        try:
            self.client.async_stream_infer(
                model, self._inputs(ids, max_new, stream), request_id=str(rid),
                enable_empty_final_response=True,
            )  # fmt: skip
        except Exception as exc:  # a request that could not be sent fails, alone
            self._forget(rid)
            self._emit([(FAILED, rid, f"send failed: {exc}", time.perf_counter_ns())])

    def _forget(self, rid: int) -> None:
        with self._lock:
            self._live.pop(rid, None)

    def _on_result(self, result: Any, error: Any) -> None:
        """The stream's callback (gRPC's thread). Whatever goes wrong here is reported: an
        exception escaping it would end tritonclient's response thread, and every request
        on the stream would wait forever."""
        now = time.perf_counter_ns()
        try:
            self._read(result, error, now)
        except Exception as exc:
            try:
                rid = int(result.get_response().id)
            except Exception:  # not even the request id: the stream is of no use
                self._emit([(BROKEN, -1, f"unreadable response: {exc!r}", now)])
                return
            self._forget(rid)
            self._emit([(FAILED, rid, f"unreadable response: {exc!r}", now)])

    def _read(self, result: Any, error: Any, now: int) -> None:
        if error is not None:
            message = str(error)
            named = _NAMED.search(message)
            if named is None:
                self._emit([(BROKEN, -1, message, now)])
                return
            rid = int(named.group(1))
            self._forget(rid)
            self._emit([(FAILED, rid, message, now)])
            return
        resp = result.get_response()
        rid = int(resp.id)
        final = resp.parameters["triton_final_response"].bool_param
        ids = result.as_numpy("output_ids")
        tokens = None
        if ids is not None:
            tokens = ids.reshape(-1)
            seq = result.as_numpy("sequence_length")
            if seq is not None:
                tokens = tokens[: int(seq.reshape(-1)[0])]
        with self._lock:
            state = self._live.get(rid)
            if state is None:  # failed or cancelled already
                return
            got, want_first = state
            if tokens is not None and len(tokens):
                got.append(tokens.astype(np.int32))
            send_first = want_first[0] and bool(got)
            if send_first:
                want_first[0] = False
            if final:
                del self._live[rid]
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
        """Cancel what is in flight and close (whatever the client says)."""
        with contextlib.suppress(Exception):
            self.client.stop_stream(cancel_requests=True)
        with contextlib.suppress(Exception):
            self.client.close()


class TritonGrpcCore(LLMCore):
    name = "triton_grpc"
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        urls = list(cfg.triton_server_urls)
        if not urls and cfg.launch_server != "triton":
            raise ConfigError(
                f"core_type {cls.name} needs --triton_server_urls (comma list of gRPC "
                "host:port, e.g. 127.0.0.1:8001) or --launch_server=triton"
            )
        for u in urls:
            host, _, port = str(u).removeprefix("grpc://").rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"--triton_server_urls: {u!r} is not host:port")
        if int(cfg.triton_num_clients_per_server) < 1 or int(cfg.triton_num_models_per_server) < 1:
            raise ConfigError("--triton_num_clients_per_server and _models_per_server: >= 1")
        end_id_for(cfg)
        _grpc()

    @classmethod
    def num_cores_for_workload(cls, cfg: Any) -> int:
        cls.validate_config(cfg)
        return len(cfg.triton_server_urls)

    def __init__(self, core_id: int, cfg: Any, callback: CompletionCallback | None = None) -> None:
        self.validate_config(cfg)
        super().__init__(core_id, cfg, callback)
        self.url = str(cfg.triton_server_urls[core_id]).removeprefix("grpc://")
        name, n_models = str(cfg.triton_model_name), int(cfg.triton_num_models_per_server)
        self.models = [name] if n_models == 1 else [f"{name}_{i}" for i in range(n_models)]
        self.end_id = end_id_for(cfg)
        self.n_clients = int(cfg.triton_num_clients_per_server)
        self.in_process = bool(cfg.triton_clients_in_process)
        self._next = 0
        self._closing = False
        self._health = _grpc().InferenceServerClient(self.url)
        self.streams: list[TritonStream] = []
        self._pool: WorkerPool | None = None
        if self.in_process:
            self.streams = [
                TritonStream(self.url, self.end_id, self._on_events) for _ in range(self.n_clients)
            ]
        else:
            settings = {"url": self.url, "end_id": self.end_id, "models": self.models}
            self._pool = WorkerPool(
                f"triton-{core_id}", worker_main, [settings] * self.n_clients,
                self._on_events, self._fail,
            )  # fmt: skip

    # --- requests --------------------------------------------------------------------------
    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        n, m = self.n_clients, len(self.models)
        batches: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
        for req in requests:  # round robin over clients, then models
            k, model = self._next % n, (self._next // n) % m
            self._next += 1
            if self._pool is None:
                ids = np.asarray(req.input_tokens, dtype=np.int32)
                self.streams[k].send(
                    req.request_id, ids, req.max_new_tokens, bool(req.stream), self.models[model]
                )
                continue
            ids_bytes = np.asarray(req.input_tokens, dtype=np.int32).tobytes()
            batches[k].append(
                (req.request_id, ids_bytes, int(req.max_new_tokens), bool(req.stream), model)
            )
        if self._pool is not None:
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

    stream = TritonStream(settings["url"], settings["end_id"], emit)
    models = settings["models"]
    try:
        while (batch := inq.get()) is not None:
            for rid, data, max_new, streaming, model in batch:
                stream.send(rid, np.frombuffer(data, dtype=np.int32), max_new, streaming,
                            models[model])  # fmt: skip
    finally:
        stream.close()
        box.close()
