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
completes as failed; so does a client process that dies (or, with ``--client_backend=ray``,
a client that runs as a Ray actor: its process or node lost). Closing the
core cancels what is in flight (``stop_stream``). Health: the server is ready and so is
every model.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cores.triton.stream import (
    FAILED,
    FINAL,
    FIRST,
    Event,
    TritonStream,
    grpc_module,
    worker_main,
)
from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError, HealthCheckError
from llmlib.serving.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.serving.procpool import WorkerPool
from llmlib.serving.raypool import RaySettings, RayWorkerPool
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse, failed_response
from llmlib.serving.workerclocks import WorkerClocks


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
        grpc_module()
        RaySettings.of(cfg).check(
            0 if s.triton_clients_in_process else s.triton_num_clients_per_server,
            "clients out of the process (not --triton_clients_in_process)",
        )

    @classmethod
    def preflight(cls, cfg: Config) -> None:
        """Ray clients on a cluster: one that can hold every core's."""
        s = TritonSettings.of(cfg)
        n = s.triton_num_clients_per_server * max(1, len(s.triton_server_urls))
        RaySettings.of(cfg).preflight(n, "--triton_num_clients_per_server")

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        cls.validate_config(cfg)
        return len(TritonSettings.of(cfg).triton_server_urls)

    @classmethod
    def config_for_core(cls, index: int, cfg: Config) -> Any:
        """Core ``index`` talks to the ``index``-th server: its config names that one alone
        (a routing core numbers its pools' cores globally, so the id is no index)."""
        urls = TritonSettings.of(cfg).triton_server_urls
        return cfg.replace(triton_server_urls=[urls[index]]) if len(urls) > 1 else cfg

    def __init__(
        self, core_id: int, cfg: Config, callback: CompletionCallback | None = None
    ) -> None:
        self.validate_config(cfg)
        super().__init__(core_id, cfg, callback)
        s = TritonSettings.of(cfg)
        urls = s.triton_server_urls  # one, from config_for_core; else indexed by the id
        self.url = (urls[0] if len(urls) == 1 else urls[core_id]).removeprefix("grpc://")
        name, n_models = s.triton_model_name, s.triton_num_models_per_server
        self.models = [name] if n_models == 1 else [f"{name}_{i}" for i in range(n_models)]
        self.end_id = end_id_for(cfg)
        self.n_clients = s.triton_num_clients_per_server
        self.in_process = s.triton_clients_in_process
        self.stall_s = float(cfg.stall_timeout_s)
        self._turn = itertools.count()
        self._closing = False
        self._health = grpc_module().InferenceServerClient(self.url)
        self.streams: list[TritonStream] = []
        self._pool: WorkerPool | RayWorkerPool | None = None
        ray = RaySettings.of(cfg)
        self._ray = ray if ray.on_ray else None
        self._issued: dict[int, int] = {}  # Ray clients: open request -> its issue time
        self.clocks = WorkerClocks()  # Ray clients: their own clocks beside ours
        if self.in_process:
            self.streams = [
                TritonStream(self.url, self.end_id, self._on_events, self.stall_s)
                for _ in range(self.n_clients)
            ]
        else:
            settings = {"url": self.url, "end_id": self.end_id, "models": self.models,
                        "stall_s": self.stall_s}  # fmt: skip
            if self._ray is not None:  # (from the main thread: Ray started elsewhere hangs)
                self._ray.start(self.n_clients)
                self._pool = self._ray.pool(f"triton-{core_id}", worker_main,
                                            [settings] * self.n_clients, self._on_remote_events,
                                            self._fail)  # fmt: skip
                return
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
        if self._ray is not None:
            self._issued.update((r.request_id, r.issue_ns) for r in requests)
        for req in requests:  # the same order; one batch per client process
            i = next(turn)
            ids_bytes = np.asarray(req.input_tokens, dtype=np.int32).tobytes()
            batches[i % n].append(
                (req.request_id, ids_bytes, int(req.max_new_tokens), bool(req.stream), (i // n) % m)
            )
        for k, batch in enumerate(batches):
            if batch:
                self._pool.put(k, batch)

    def _on_events(self, events: Sequence[tuple[Any, ...]]) -> None:
        """What the streams report (gRPC's thread, or the client processes' reader: their
        events carry a fifth item, unused here)."""
        cid = self.core_id
        out: list[LLMResponse] = []
        for kind, rid, payload, t, *_ in events:
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

    def _on_remote_events(self, events: list[tuple[int, int, Any, int, int]]) -> None:
        """Ray clients' events, stamped as they arrive here (a client on another host has
        another clock: the hop's cost is then in the latencies LoadGen sees); the client's
        own durations kept beside ours (``WorkerClocks``)."""
        now, clocks, issued = time.perf_counter_ns(), self.clocks, self._issued
        out: list[Event] = []
        for kind, rid, payload, t, t0 in events:
            if kind == FIRST:
                clocks.first(rid, t, now)
            elif kind == FINAL:
                clocks.final(rid, issued.pop(rid, 0), t, t0, now)
            elif kind == FAILED:
                clocks.forget(rid)
                issued.pop(rid, None)
            out.append((kind, rid, payload, now))
        self._on_events(out)

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
        clients = f"{self.n_clients} gRPC stream clients, {where}"
        if self._ray is not None and isinstance(self._pool, RayWorkerPool):
            clients = self._ray.describe(self._pool, "gRPC stream clients")
        notes = [
            f"core {self.core_id}: triton {self.url}, models {', '.join(self.models)}; "
            f"{clients}; end_id {self.end_id}"
        ]
        if line := self.clocks.line():
            notes.append(f"core {self.core_id}: {line}")
        return notes

    def write_records(self, run_dir: Path) -> list[str]:
        """Ray clients: ``worker_clocks_core<N>.csv`` (``WorkerClocks``)."""
        return self.clocks.write(run_dir, self.core_id)
