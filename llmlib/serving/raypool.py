"""Client workers as Ray actors: ``WorkerPool``'s contract (``put(k, batch)``, answers in
lists to ``on_batch``, a lost worker reported once to ``on_death``, ``close``) with each
worker an actor placed on a node of a Ray cluster, so a core's client can use more cores
than one host has.

LoadGen stays the one scheduler, on the driver: requests go to the actors in batches
(``submit``), and each actor's answers come back in lists through a long poll (``take``),
one outstanding per actor, waited on together by one reader thread. A worker is the same
``target(settings, inq, outq)`` as a worker process runs: the actor gives it a queue to
read and itself as ``outq``.

Placement: one placement group of a bundle per worker (one CPU each, and one unit of
``resource`` where given: a node started with ``--resources='{"NAME": N}'`` then holds at
most N workers), spread over the nodes (``spread``: Ray's SPREAD, best effort) or packed
onto as few as fit (``pack``). A cluster that cannot place them within ``place_s`` fails
the pool's start with a line that says what was asked.

Failures are Ray's to detect: an actor whose process or node is lost answers its poll with
an actor error, reported once to ``on_death`` (the core then fails everything pending). A
worker's own loop that ends while the pool is open is reported the same way.

Clocks: a worker on another host has another monotonic clock, so its timestamps mean
nothing on the driver; a core that uses this pool stamps answers when they arrive (the
transport's cost then shows in its latencies) and may keep the worker's own durations.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from llmlib.config.fields import Section, setting
from llmlib.deploy.ray_cluster import import_ray, init_ray, unreachable
from llmlib.errors import ConfigError
from llmlib.serving.procpool import deliver

BACKEND = ("--client_backend=ray", "--client_backend=process")  # (the flag, its other choice)


@dataclass(frozen=True)
class RaySettings(Section):
    """Where a client core's workers run (the ``openai`` core's ``--workers_per_core``, the
    ``triton_grpc`` core's clients per server): spawned here, or as Ray actors."""

    group: ClassVar[str] = "ray"
    client_backend: str = setting(
        "process",
        "where client worker processes run: process (spawned here) or ray (Ray actors on the "
        "cluster at --ray_address, or on a Ray started here; pip install -e '.[ray]')",
        choices=("process", "ray"),
    )
    ray_address: str = setting(
        "", "the Ray cluster for --client_backend=ray: host:port, ray://host:port or auto "
        "(empty: start Ray on this machine)"
    )  # fmt: skip
    ray_placement: str = setting(
        "spread", "Ray client workers spread over the nodes, or packed onto as few as fit",
        choices=("spread", "pack"),
    )  # fmt: skip
    ray_worker_resource: str = setting(
        "", "a custom Ray resource each client worker takes one unit of: nodes started with "
        "--resources='{\"NAME\": N}' hold at most N workers, others none"
    )  # fmt: skip
    ray_connect_timeout_s: float = setting(
        30.0, "how long to wait for the Ray cluster to answer, and to place the workers",
        minimum=1.0,
    )  # fmt: skip

    @property
    def on_ray(self) -> bool:
        return self.client_backend == "ray"

    def check(self, workers: int, what: str) -> None:
        """What can be checked without a connection (``what``: the flag that sets the
        workers, for the message): Ray installed, the address's form and that something
        listens there, a custom resource only with a cluster."""
        if not self.on_ray:
            return
        if workers < 1:
            raise ConfigError(f"--client_backend=ray runs the workers as Ray actors: give {what}")
        import_ray(*BACKEND)
        if self.ray_address:
            why = unreachable(self.ray_address)  # (its form too)
            if why:
                raise ConfigError(f"no Ray cluster at {self.ray_address}: {why}")
        elif self.ray_worker_resource:
            raise ConfigError(
                "--ray_worker_resource places workers on the nodes of a cluster that offer it: "
                "give --ray_address (a Ray started here has no custom resources)"
            )

    def preflight(self, workers: int, what: str) -> None:
        """Join the cluster at ``ray_address`` and check it has a CPU (and a unit of the
        custom resource) for each of ``workers``, once, before any test starts."""
        if not self.on_ray or not self.ray_address:
            return
        ray = init_ray(*BACKEND, self.ray_address, 0, self.ray_connect_timeout_s)
        try:
            have = ray.cluster_resources()
        finally:
            ray.shutdown()
        for key in ("CPU", self.ray_worker_resource):
            if key and have.get(key, 0) < workers:
                raise ConfigError(
                    f"the Ray cluster at {self.ray_address} has {have.get(key, 0):g} {key} in "
                    f"all; {workers} client workers take one each: fewer {what}, or more nodes"
                )

    def start(self, workers: int) -> None:
        """Ray joined, or started here with a CPU for each worker at least (from the main
        thread: Ray started from another one hangs)."""
        cpus = 0 if self.ray_address else max(os.cpu_count() or 1, workers)
        init_ray(*BACKEND, self.ray_address, cpus, self.ray_connect_timeout_s)

    def pool(
        self,
        name: str,
        target: Callable[[Any, Any, Any], None],
        settings: Sequence[Any],
        on_batch: Callable[[list[Any]], None],
        on_death: Callable[[str], None],
    ) -> RayWorkerPool:
        return RayWorkerPool(name, target, settings, on_batch, on_death,
                             placement=self.ray_placement, resource=self.ray_worker_resource,
                             place_s=self.ray_connect_timeout_s)  # fmt: skip

    def describe(self, pool: RayWorkerPool, what: str) -> str:
        """``N Ray client workers (spread: 2 on host (node id), ...)``."""
        from collections import Counter

        nodes = Counter((h, node[:8]) for h, node, _ in pool.hosts)
        where = ", ".join(f"{n} on {h} (node {node})" for (h, node), n in sorted(nodes.items()))
        return f"{len(pool)} Ray {what} ({self.ray_placement}: {where})"


POLL_S = 0.5  # a poll's longest wait in the actor (the reader's turn-around for closing)


class RemoteWorker:
    """The actor: ``target`` runs in a thread of its own, reading ``submit``'s batches and
    putting its answers here (``put``) for the driver's next ``take``."""

    def __init__(self, target: Callable[[Any, Any, Any], None], settings: Any) -> None:
        self._inq: queue.Queue[Any] = queue.Queue()
        self._out: list[Any] = []
        self._cv = threading.Condition()
        self._ended = ""  # why the target returned, once it has
        self._thread = threading.Thread(target=self._run, args=(target, settings), daemon=True)
        self._thread.start()

    def _run(self, target: Callable[[Any, Any, Any], None], settings: Any) -> None:
        why = "its loop returned"
        try:
            target(settings, self._inq, self)
        except BaseException as exc:  # (reported to the driver: it fails what is pending)
            why = f"its loop raised {type(exc).__name__}: {exc}"
        with self._cv:
            self._ended = why
            self._cv.notify_all()

    def put(self, obj: Any) -> None:
        with self._cv:
            self._out.append(obj)
            self._cv.notify_all()

    def submit(self, batch: Any) -> None:
        self._inq.put(batch)

    def take(self, wait_s: float = POLL_S) -> tuple[list[Any], str]:
        """Everything put since the last take (waiting up to ``wait_s`` for something), and
        why the worker's loop ended ("" while it runs)."""
        with self._cv:
            if not self._out and not self._ended:
                self._cv.wait(wait_s)
            out, self._out = self._out, []
            return out, self._ended

    def stop(self, wait_s: float = 10.0) -> None:
        self._inq.put(None)
        self._thread.join(wait_s)

    def where(self) -> tuple[str, str, int]:
        """Its host, its Ray node's id and its process id."""
        import ray

        return socket.gethostname(), ray.get_runtime_context().get_node_id(), os.getpid()


class RayWorkerPool:
    def __init__(
        self,
        name: str,
        target: Callable[[Any, Any, Any], None],
        settings: Sequence[Any],
        on_batch: Callable[[list[Any]], None],
        on_death: Callable[[str], None],
        *,
        placement: str = "spread",
        resource: str = "",
        place_s: float = 60.0,
    ) -> None:
        import ray as _ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._ray = ray = cast(Any, _ray)  # (its stubs know no actor options)
        self.name = name
        self._on_batch, self._on_death = on_batch, on_death
        self._closing = False
        n = len(settings)
        bundle: dict[str, float] = {"CPU": 1.0, **({resource: 1.0} if resource else {})}
        strategy = {"spread": "SPREAD", "pack": "PACK"}[placement]
        self._pg = placement_group([dict(bundle) for _ in range(n)], strategy=strategy)
        ready, _ = ray.wait([self._pg.ready()], timeout=place_s)
        if not ready:
            remove_placement_group(self._pg)
            have = ray.available_resources()
            raise ConfigError(
                f"{name}: the Ray cluster could not place {n} client workers of {bundle} "
                f"within {place_s:g} s (free now: {_short(have, bundle)}); use fewer "
                "--workers_per_core or add nodes"
            )
        actor = ray.remote(num_cpus=1, max_concurrency=4, max_restarts=0)(RemoteWorker)
        self.actors: list[Any] = []
        try:
            for i, s in enumerate(settings):
                bundle_i = PlacementGroupSchedulingStrategy(
                    self._pg, placement_group_bundle_index=i
                )
                self.actors.append(actor.options(
                    name=f"{name}-{i}-{os.getpid()}", scheduling_strategy=bundle_i,
                    resources={resource: 1.0} if resource else {},
                ).remote(target, s))  # fmt: skip
            self.hosts = ray.get([a.where.remote() for a in self.actors], timeout=place_s)
        except BaseException:  # nothing placed may outlive a pool that did not start
            self._free()
            raise
        self._reader = threading.Thread(target=self._read, name=f"{name}-rx", daemon=True)
        self._reader.start()

    def __len__(self) -> int:
        return len(self.actors)

    def put(self, k: int, batch: list[Any]) -> None:
        self.actors[k].submit.remote(batch)

    def _read(self) -> None:
        ray = self._ray
        polls = {a.take.remote(): k for k, a in enumerate(self.actors)}
        reported = False
        while polls and not self._closing:
            ready, _ = ray.wait(list(polls), num_returns=1, timeout=POLL_S)
            for ref in ready:
                k = polls.pop(ref)
                try:
                    batches, ended = ray.get(ref)
                except Exception as exc:  # the actor's process or node is gone
                    batches, ended = [], f"lost ({type(exc).__name__}: {_first(exc)})"
                for batch in batches:
                    deliver(self.name, self._on_batch, self._on_death, batch)
                if ended and not self._closing:
                    if not reported:
                        reported = True
                        self._on_death(f"Ray client worker {self.name}-{k} {ended}")
                    continue
                polls[self.actors[k].take.remote()] = k

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to stop, wait, kill the actors, free their placement."""
        self._closing = True
        ray = self._ray
        with contextlib.suppress(Exception):
            ray.wait([a.stop.remote() for a in self.actors], num_returns=len(self.actors),
                     timeout=timeout_s)  # fmt: skip
        self._free()
        self._reader.join(timeout_s)

    def _free(self) -> None:
        """Kill the actors and free their placement group."""
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            with contextlib.suppress(Exception):
                self._ray.kill(a)
        with contextlib.suppress(Exception):
            remove_placement_group(self._pg)


def _first(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _short(have: dict[str, float], want: dict[str, float]) -> str:
    return ", ".join(f"{k} {have.get(k, 0):g}" for k in want)
