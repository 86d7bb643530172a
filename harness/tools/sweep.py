"""``python -m harness simulate --sweep``: every fleet x policy x rate x seed of one workload,
each one simulator run, as Ray tasks (this machine's cores, or the cluster at
``--ray_address``) or one after another in this process (``--sweep_backend=process``).

    python -m harness simulate --sweep --engines "cpu-tiny:8:0.5;cpu-tiny:4:0.5" \\
        --policy round_robin,least_pending --rate 100,200,300 --seed 0,1,2 --requests 5000

The runs are merged into one table (printed), ``sweep.json`` (each run's summary with its
point), ``sweep.csv`` (a row a run) and ``sweep.png`` (p95 TTFT and goodput per dollar, or
goodput where no engine has a price, against rate: a line per policy, a column per fleet,
the mean over seeds), all in ``--out``. A run's results do not depend on where it ran: the
simulator is seeded, and each run builds its own workload from its rate and seed.

Failure modes:

- a list without ``--sweep``, a bad number in a list (text, nan, inf, a rate not above 0, a
  negative seed), an unknown profile, policy or flag: one line, exit status 2, before any
  run;
- Ray missing with ``--sweep_backend=ray``: one line naming the extra, exit 2;
- no Ray cluster at ``--ray_address``: one line, exit 2;
- a run that raises, or whose Ray worker dies: that point is reported failed with its
  error (in the table, the JSON and the CSV), the other runs are kept, exit status 1;
- the Ray this command starts is shut down whatever happens (its processes end with it).
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.tools.simulate import fleet, numbers, run_one, setup, workload
from llmlib.deploy.ray_cluster import host_port, init_ray
from llmlib.errors import ConfigError


@dataclass(frozen=True)
class Point:
    """One run of a sweep."""

    fleet: str
    policy: str
    rate: float
    seed: int


def grid(args: argparse.Namespace) -> list[Point]:
    """Every point ``args`` asks for, each part checked (a ConfigError before any run)."""
    fleets = [f.strip() for f in args.engines.split(";") if f.strip()]
    if not fleets:
        raise ConfigError("--engines: give at least one fleet, profile[:count[:price]],...")
    for f in fleets:
        fleet(args, f)
    policies = setup(args).policies
    if args.sweep_backend == "ray" and args.ray_address:
        host_port(args.ray_address)
    rates = numbers(args.rate, "rate", float)
    seeds = numbers(args.seed, "seed", int)
    return [Point(*p) for p in itertools.product(fleets, policies, rates, seeds)]


def run_point(args: argparse.Namespace, point: Point) -> dict[str, Any]:
    """One point's summary (in a Ray worker or here): its own copy of ``args``."""
    a = copy.copy(args)
    a.engines, a.rate, a.seed = point.fleet, point.rate, point.seed
    reqs = workload(a, point.rate, point.seed)
    return run_one(a, setup(a), reqs, fleet(a, point.fleet), point.policy, point.seed)


def in_process(
    args: argparse.Namespace, points: list[Point], fn: Any = run_point
) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    for p in points:
        try:
            out.append(fn(args, p))
        except Exception as exc:  # reported as that point's failure; the others go on
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def on_ray(
    args: argparse.Namespace, points: list[Point], fn: Any = run_point
) -> list[dict[str, Any] | str]:
    ray = init_ray("--sweep_backend=ray", "--sweep_backend=process", args.ray_address,
                   args.ray_cpus, args.ray_connect_timeout_s)  # fmt: skip
    try:
        task = ray.remote(max_retries=0)(fn)  # a failed run is reported, not rerun
        refs = [task.remote(args, p) for p in points]
        return collect(ray, refs)
    finally:
        ray.shutdown()


NO_CPU_S = 10.0  # a cluster without a CPU this long fails the runs still waiting for one


def collect(ray: Any, refs: list[Any]) -> list[dict[str, Any] | str]:
    """Each task's result, or why it failed: it raised, its worker or node died, or no node
    with a CPU was left in the cluster for ``NO_CPU_S`` (Ray would keep such runs waiting
    for ever: they are cancelled)."""
    out: dict[Any, dict[str, Any] | str] = {}
    pending, no_cpu = list(refs), None
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        for ref in done:
            try:
                out[ref] = ray.get(ref)
            except Exception as exc:  # the task raised, or its worker or node died
                cause = getattr(exc, "cause", None) or exc
                text = str(cause).strip()
                out[ref] = f"{type(cause).__name__}: {text.splitlines()[-1][:200] if text else ''}"
        if not pending or ray.cluster_resources().get("CPU", 0) > 0:
            no_cpu = None
            continue
        no_cpu = no_cpu or time.monotonic()
        if time.monotonic() - no_cpu >= NO_CPU_S:
            for ref in pending:
                ray.cancel(ref, force=True)
                out[ref] = f"no node with a CPU left in the cluster for {NO_CPU_S:g} s"
            pending = []
    return [out[r] for r in refs]


def flat(point: Point, res: dict[str, Any] | str) -> dict[str, Any]:
    """A CSV row: the point, then its headline figures or its error."""
    row: dict[str, Any] = {**asdict(point), "error": ""}
    if isinstance(res, str):
        return {**row, "error": res}
    t, p = res["ttft_ms"], res["tpot_ms"]
    return {
        **row,
        "ttft_p50_ms": t["p50"],
        "ttft_p95_ms": t["p95"],
        "ttft_p99_ms": t["p99"],
        "tpot_p95_ms": p.get("p95", 0.0),
        "goodput_rps": res["goodput_rps"],
        "goodput_per_dollar": res["goodput_per_dollar"],
        "prefix_hit_rate": res["prefix_hit_rate"],
        "simulated_in_s": res["simulated_in_s"],
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """p95 TTFT and goodput per dollar (or goodput) against rate: a line per policy, a
    column per fleet, the mean over seeds of the runs that finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in rows if not r["error"]]
    fleets = list(dict.fromkeys(r["fleet"] for r in rows))
    priced = any(r.get("goodput_per_dollar") is not None for r in done)
    second = ("goodput_per_dollar", "goodput per $") if priced else ("goodput_rps", "goodput rps")
    fig, axes = plt.subplots(2, len(fleets), figsize=(4.5 * len(fleets), 6.5), squeeze=False)
    for j, f in enumerate(fleets):
        for i, (key, label) in enumerate((("ttft_p95_ms", "p95 TTFT ms"), second)):
            ax = axes[i][j]
            for pol in dict.fromkeys(r["policy"] for r in done if r["fleet"] == f):
                pts = [r for r in done if r["fleet"] == f and r["policy"] == pol]
                rates = sorted({r["rate"] for r in pts})
                ys = [np.mean([r[key] or 0.0 for r in pts if r["rate"] == x]) for x in rates]
                ax.plot(rates, ys, marker="o", label=pol)
            ax.set_xlabel("rate (requests/s)")
            ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f, fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(args: argparse.Namespace) -> int:
    points = grid(args)
    t0 = time.perf_counter()
    backend = on_ray if args.sweep_backend == "ray" else in_process
    runs = backend(args, points, run_point)
    wall = time.perf_counter() - t0
    rows = [flat(p, r) for p, r in zip(points, runs, strict=True)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "backend": args.sweep_backend,
        "ray_address": args.ray_address,
        "points": len(points),
        "failed": sum(1 for r in rows if r["error"]),
        "wall_s": wall,
        "runs": [
            {**asdict(p), **({"error": r} if isinstance(r, str) else {"summary": r})}
            for p, r in zip(points, runs, strict=True)
        ],
    }
    (out / "sweep.json").write_text(json.dumps(doc, indent=1) + "\n")
    with open(out / "sweep.csv", "w", newline="") as fh:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "sweep.png")
    print("| fleet | policy | rate | seed | TTFT p95 ms | TPOT p95 ms | goodput rps | per $ |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        head = f"| {r['fleet']} | {r['policy']} | {r['rate']:g} | {r['seed']} |"
        if r["error"]:
            print(f"{head} failed: {r['error']} | | | |")
            continue
        gpd = r["goodput_per_dollar"]
        print(
            f"{head} {r['ttft_p95_ms']:.1f} | {r['tpot_p95_ms']:.2f} | {r['goodput_rps']:.1f} | "
            f"{'-' if gpd is None else f'{gpd:,.0f}'} |"
        )
    print(f"{len(points)} runs in {wall:.1f} s ({args.sweep_backend}): {out}/sweep.json, "
          "sweep.csv, sweep.png")  # fmt: skip
    if doc["failed"]:
        print(f"error: {doc['failed']} of {len(points)} runs failed (their rows say why)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
