"""``triton_grpc``: a client core for Triton Inference Server over gRPC, speaking the
TensorRT-LLM backend's tensor interface (``llmlib.triton_repo``), the path MLPerf
submitters use with Triton.

One core per server in ``--triton_server_urls`` (``host:port`` of its gRPC endpoint). Each
core holds ``--triton_num_clients_per_server`` ``tritonclient.grpc`` clients, each with one
open stream (``start_stream``); requests go round-robin over the clients and, with
``--triton_num_models_per_server`` > 1, over the models ``<name>_0 .. <name>_{N-1}`` the
server loads. Every request is streamed (a decoupled model answers only on a stream):
``streaming`` true for Server/SingleStream (one response per token, the first one is the
first token), false for Offline (one response with every token). The end of a request is
the ``triton_final_response`` parameter (``enable_empty_final_response``).

A failure is a record, never a retry: a response with an error fails its request (the
Python-backend model names the request in its message, ``request <id>:``; tritonclient's
stream callback gives no request id with an error). An error that names no request (a
broken stream, the server gone, or a backend that does not name it) takes the core down:
every pending query completes as failed. Closing the core cancels what is in flight
(``stop_stream``). Health: the server is ready and so is every model.

The clients run in this process for now (their gRPC threads deliver responses); the issue's
client processes per server are not built yet.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from llmlib.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.errors import ConfigError, HealthCheckError, MissingDependencyError
from llmlib.request import LLMRequest, LLMResponse

_NAMED = re.compile(r"request (-?\d+):")


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise MissingDependencyError(
            "the triton_grpc core needs tritonclient: pip install -e .[triton]"
        ) from None
    return grpcclient


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
        _grpc()

    @classmethod
    def num_cores_for_workload(cls, cfg: Any) -> int:
        cls.validate_config(cfg)
        return len(cfg.triton_server_urls)

    def __init__(self, core_id: int, cfg: Any, callback: CompletionCallback | None = None) -> None:
        self.validate_config(cfg)
        super().__init__(core_id, cfg, callback)
        grpc = _grpc()
        self._g = grpc
        self.url = str(cfg.triton_server_urls[core_id]).removeprefix("grpc://")
        name, n_models = str(cfg.triton_model_name), int(cfg.triton_num_models_per_server)
        self.models = [name] if n_models == 1 else [f"{name}_{i}" for i in range(n_models)]
        self.end_id = int(cfg.triton_end_id)
        self._lock = threading.Lock()
        # request id -> (client index, tokens so far, first token sent)
        self._live: dict[int, tuple[int, list[np.ndarray], list[bool]]] = {}
        self._next = 0
        self._closing = False
        self.clients = []
        for k in range(int(cfg.triton_num_clients_per_server)):
            client = grpc.InferenceServerClient(self.url)
            client.start_stream(callback=partial(self._on_result, k))
            self.clients.append(client)

    # --- requests --------------------------------------------------------------------------
    def _inputs(self, req: LLMRequest) -> list[Any]:
        g = self._g

        def tensor(name: str, arr: np.ndarray, dtype: str) -> Any:
            t = g.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            return t

        ids = np.asarray(req.input_tokens, dtype=np.int32).reshape(1, -1)
        out = [
            tensor("input_ids", ids, "INT32"),
            tensor("input_lengths", np.array([[ids.shape[1]]], np.int32), "INT32"),
            tensor("request_output_len", np.array([[req.max_new_tokens]], np.int32), "INT32"),
            tensor("streaming", np.array([[bool(req.stream)]], bool), "BOOL"),
            tensor("beam_width", np.array([[1]], np.int32), "INT32"),
        ]
        if self.end_id >= 0:
            out.append(tensor("end_id", np.array([[self.end_id]], np.int32), "INT32"))
            out.append(tensor("pad_id", np.array([[self.end_id]], np.int32), "INT32"))
        return out

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        for req in requests:
            rid = req.request_id
            with self._lock:
                k = self._next % len(self.clients)
                model = self.models[(self._next // len(self.clients)) % len(self.models)]
                self._next += 1
                self._live[rid] = (k, [], [False])
            try:
                self.clients[k].async_stream_infer(
                    model, self._inputs(req), request_id=str(rid), enable_empty_final_response=True
                )
            except Exception as exc:  # a request that could not be sent fails, alone
                self._drop(rid)
                self._fail_ids([rid], f"triton {self.url}: send failed: {exc}")

    def _drop(self, rid: int) -> None:
        with self._lock:
            self._live.pop(rid, None)

    def _on_result(self, k: int, result: Any, error: Any) -> None:
        """A stream's callback (its gRPC thread): one response, or an error."""
        now = time.perf_counter_ns()
        if error is not None:
            self._on_error(k, str(error))
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
            got, first = state[1], state[2]
            if tokens is not None and len(tokens):
                got.append(tokens.astype(np.int32))
            send_first = not first[0] and bool(got)
            first[0] = first[0] or send_first
            if final:
                del self._live[rid]
        req = self._pending.get(rid)
        out: list[LLMResponse] = []
        if send_first and req is not None and req.stream:
            out.append(LLMResponse(rid, got[0][:1], False, now, self.core_id))
        if final:
            if not got:
                self._fail_ids([rid], f"triton {self.url}: the final response came with no tokens")
                return
            out.append(LLMResponse(rid, np.concatenate(got), True, now, self.core_id))
        if out:
            self._deliver(out)

    def _on_error(self, k: int, message: str) -> None:
        named = _NAMED.search(message)
        if named is not None:
            rid = int(named.group(1))
            self._drop(rid)
            self._fail_ids([rid], f"triton {self.url}: {message}")
            return
        if self._closing:
            return
        # an error naming no request: the stream (or the server) broke, so nothing pending
        # on this core can be trusted to finish: the core goes down, every query fails
        self._fail(f"triton {self.url}: stream {k}: {message}")

    # --- health and shutdown ----------------------------------------------------------------
    def _health_check_impl(self) -> None:
        client = self.clients[0]
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
        for client in self.clients:  # (closing regardless of what a client says)
            with contextlib.suppress(Exception):
                client.stop_stream(cancel_requests=True)
            with contextlib.suppress(Exception):
                client.close()
