"""Joining a Ray cluster, or starting one on this machine, with one clear line for each way
it can fail: Ray not installed, an address of the wrong form, nothing listening there, a
cluster that does not answer in time. Used by ``simulate --sweep`` (runs as Ray tasks) and
by the client worker pools (``--client_backend=ray``: workers as Ray actors).

Ray started here (no address) must be started from the main thread: from another one,
``ray.init`` hangs starting its processes. Joining a cluster runs in a thread of its own,
so a cluster that never answers costs ``wait_s``, not the run."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from llmlib.errors import ConfigError

GCS_WAIT = "RAY_gcs_server_port_wait_time_s"
LOCAL_GCS_WAIT_S = 120.0
LOCAL_STARTS = 2


def host_port(address: str) -> tuple[str, int] | None:
    """``--ray_address``'s host and port (None for auto); a ConfigError for another form."""
    if address == "auto":
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray_address={address}: not host:port, ray://host:port or auto")
    return host or "127.0.0.1", int(port)


def unreachable(address: str, timeout_s: float = 3.0) -> str:
    """Why nothing listens at ``address``, or "" (also for auto: Ray says at once when no
    cluster runs here)."""
    where = host_port(address)
    if where is None:
        return ""
    try:
        socket.create_connection(where, timeout_s).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(ray: Any, kw: dict[str, Any], address: str, wait_s: float) -> None:
    """``ray.init(**kw)`` to the cluster at ``address`` in a thread of its own, given
    ``wait_s``: a ConfigError when it fails or still waits (the thread is left behind; the
    command then ends)."""
    failed: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(**kw)
        except BaseException as exc:  # (said below)
            failed.append(exc)

    t = threading.Thread(target=init, name="ray-init", daemon=True)
    t.start()
    t.join(wait_s)
    if t.is_alive():
        raise ConfigError(f"no Ray cluster at {address}: none answered within {wait_s:g} s")
    if failed:
        raise ConfigError(f"no Ray cluster at {address}: {first_line(failed[0])}")


def import_ray(flag: str, instead: str = "") -> Any:
    """The ``ray`` module, or a ConfigError naming the extra (and what to use ``instead``)."""
    try:
        import ray
    except ImportError:
        other = f" (or {instead})" if instead else ""
        raise ConfigError(f"{flag} needs Ray: pip install -e '.[ray]'{other}") from None
    return ray


def init_ray(
    flag: str, instead: str = "", address: str = "", cpus: int = 0, wait_s: float = 30.0
) -> Any:
    """Ray joined to the cluster at ``address``, or started on this machine (``cpus`` CPUs;
    0: all) from the main thread; the ``ray`` module. Already initialised: as it is."""
    ray = import_ray(flag, instead)
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address:
        kw["address"] = address
        why = unreachable(address)
        if why:
            raise ConfigError(f"no Ray cluster at {address}: {why}")
        connect(ray, kw, address, wait_s)
        return ray
    if cpus > 0:
        kw["num_cpus"] = cpus
    # Ray gives its GCS 30 s to bind a port, which a busy 2-core machine can miss (seen in
    # CI with a Triton server and the harness running); the operator's own setting stands.
    os.environ.setdefault(GCS_WAIT, str(int(max(wait_s, LOCAL_GCS_WAIT_S))))
    why = ""
    for _ in range(LOCAL_STARTS):  # its raylet and agents have fixed waits of their own
        # (15-30 s) that a busy machine also misses now and then: one more start, clean
        try:
            ray.init(**kw)
            return ray
        except Exception as exc:
            why = why or first_line(exc)
            with contextlib.suppress(Exception):
                ray.shutdown()  # whatever of it did start
    raise ConfigError(
        f"Ray did not start on this machine ({LOCAL_STARTS} tries): {why}; its logs: "
        "/tmp/ray/session_latest/logs"
    )
