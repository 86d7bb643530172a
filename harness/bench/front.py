"""``python -m harness bench-front``: the serving front as a server, measured.

* ``route``: ``POST /route`` with one prompt a request, closed loop at each concurrency
  (``--concurrency 1,8,64``): decisions/s and client-side p50/p95/p99 latency, next to the
  router's own decision latency in process on the same prompts (``router bench``'s
  figure): the difference is what the HTTP layer costs a decision.
* ``capacity``: streamed ``/v1/completions`` against the ``zero`` profile (answers at once)
  with one SSE event a token (``--stream_events token``), closed loop at the highest
  concurrency: requests/s and events/s, with keys, a rate limit and the admission bound on
  and then off (same run, interleaved).
* ``overload``: Poisson arrivals at ``--overload`` times the measured capacity for
  ``--overload_s`` seconds against a front whose ``--max_in_flight`` is the capacity run's
  concurrency: admitted requests' latency against the capacity run's, how fast refusals
  (429) come back, and the front's resident memory (VmRSS, sampled) before, at its peak and
  after.

The client is ``--clients`` processes, each an asyncio loop with its share of the
concurrency (so one Python process is not the ceiling); the front is started here, on
127.0.0.1, with ``taskset`` pinning where ``--server_cpus`` is given. Results go to
build/bench/<stamp>/front.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.argparser import ArgParser
from harness.serve.process import FrontProcess
from llmlib.config.settings import REPO_ROOT
from llmlib.errors import ConfigError

STREAM_BODY = {"prompt": list(range(1, 33)), "max_tokens": 64, "stream": True}


# --- the client: one process's share -----------------------------------------------------
async def _closed(
    url: str, path: str, bodies: list[bytes], conc: int, secs: float, headers: dict[str, str]
) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    statuses: dict[int, int] = {}
    events = 0
    stop = time.perf_counter() + secs

    async def worker(k: int, session: Any) -> None:
        nonlocal events
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with session.post(url + path, data=bodies[i % len(bodies)], headers=headers) as r:
                if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                    async for line in r.content:
                        if line.startswith(b"data: {"):
                            events += 1
                else:
                    await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            lat.append(time.perf_counter() - t0)
            i += conc

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(k, session) for k in range(conc)))
    return {"lat": lat, "statuses": statuses, "events": events}


async def _open(
    url: str, path: str, body: bytes, rate: float, secs: float, seed: int, headers: dict[str, str]
) -> dict[str, Any]:
    import aiohttp

    rng = np.random.default_rng(seed)
    out: list[tuple[int, float]] = []

    async def one(session: Any) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url + path, data=body, headers=headers) as r:
                await r.read()
                out.append((r.status, time.perf_counter() - t0))
        except aiohttp.ClientError:
            out.append((0, time.perf_counter() - t0))

    conn = aiohttp.TCPConnector(limit=0)
    tasks = []
    async with aiohttp.ClientSession(connector=conn) as session:
        t_next, end = time.perf_counter(), time.perf_counter() + secs
        while t_next < end:
            t_next += rng.exponential(1.0 / rate)
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    return {"results": out}


def _child(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "closed":
        return asyncio.run(
            _closed(
                job["url"], job["path"], job["bodies"], job["conc"], job["secs"], job["headers"]
            )
        )
    return asyncio.run(
        _open(
            job["url"],
            job["path"],
            job["body"],
            job["rate"],
            job["secs"],
            job["seed"],
            job["headers"],
        )
    )


def closed_loop(
    url: str,
    path: str,
    bodies: list[bytes],
    conc: int,
    secs: float,
    clients: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``conc`` requests in flight from ``clients`` processes for ``secs``: rate, latency."""
    n = max(1, min(clients, conc))
    shares = [conc // n + (1 if k < conc % n else 0) for k in range(n)]
    jobs = [
        {
            "kind": "closed",
            "url": url,
            "path": path,
            "bodies": bodies[k::n] or bodies,
            "conc": c,
            "secs": secs,
            "headers": headers or {},
        }
        for k, c in enumerate(shares)
    ]
    with mp.get_context("spawn").Pool(n) as pool:
        parts = pool.map(_child, jobs)
    lat = np.concatenate([np.asarray(p["lat"]) for p in parts]) * 1e3
    statuses: dict[int, int] = {}
    for p in parts:
        for s, c in p["statuses"].items():
            statuses[s] = statuses.get(s, 0) + c
    return {
        "concurrency": conc,
        "requests": int(len(lat)),
        "per_s": len(lat) / secs,
        "events_per_s": sum(p["events"] for p in parts) / secs,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "statuses": statuses,
    }


def open_loop(
    url: str, path: str, body: bytes, rate: float, secs: float, clients: int, sample: Any = None
) -> dict[str, Any]:
    jobs = [
        {
            "kind": "open",
            "url": url,
            "path": path,
            "body": body,
            "rate": rate / clients,
            "secs": secs,
            "seed": k,
            "headers": {},
        }
        for k in range(clients)
    ]
    with mp.get_context("spawn").Pool(clients) as pool:
        res = pool.map_async(_child, jobs)
        peak = 0.0
        while not res.ready():
            if sample is not None:
                peak = max(peak, sample())
            res.wait(0.5)
        parts = res.get()
    rows = [r for p in parts for r in p["results"]]
    by: dict[int, list[float]] = {}
    for status, t in rows:
        by.setdefault(status, []).append(t * 1e3)

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    return {
        "offered_per_s": rate,
        "sent": len(rows),
        "statuses": {s: len(v) for s, v in by.items()},
        "ok_p50_ms": pct(by.get(200, []), 50),
        "ok_p99_ms": pct(by.get(200, []), 99),
        "refused_p50_ms": pct(by.get(429, []), 50),
        "refused_p99_ms": pct(by.get(429, []), 99),
        "rss_peak_mb": peak,
    }


# --- the measurements ---------------------------------------------------------------------
def _prompts(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        raise ConfigError(
            f"bench-front route: no prompts at {path}: make router-corpus, or "
            "--prompts FILE (JSONL with a text field)"
        )
    texts = []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if row.get("split", "held_out") == "held_out" and row.get("text"):
                texts.append(str(row["text"]))
            if len(texts) >= limit:
                break
    if not texts:
        raise ConfigError(f"bench-front route: {path} holds no held-out prompt with text")
    return texts


def route(args: argparse.Namespace) -> dict[str, Any]:
    from llmlib.router.config import load_routing_config
    from llmlib.router.evaluation import bench

    texts = _prompts(Path(args.prompts), args.max_prompts)
    rc = load_routing_config(args.routing_config)
    inproc = bench(rc.router(), texts)
    front = FrontProcess(
        [
            "--core_type=routing",
            f"--routing_config={args.routing_config}",
            f"--tokenizer_path={args.tokenizer}",
        ],
        args.server_cpus,
    )
    try:
        bodies = [json.dumps({"prompts": [t]}).encode() for t in texts]
        closed_loop(front.url, "/route", bodies, 8, 2.0, args.clients)  # warm the word cache
        rows = [
            closed_loop(front.url, "/route", bodies, c, args.seconds, args.clients)
            for c in args.concurrency
        ]
    finally:
        front.stop()
    return {
        "prompts": len(texts),
        "in_process_p50_us": inproc["p50_us"],
        "in_process_p99_us": inproc["p99_us"],
        "http": rows,
    }


def capacity(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    keys = root / "keys"
    keys.write_text("bench-key\n")
    conc = max(args.concurrency)
    base = ["--engine_profile=zero", "--stream_events=token", "--max_tokens_cap=4096"]
    guarded = [
        *base,
        f"--api_keys_file={keys}",
        "--rate_limit=1000000",
        f"--max_in_flight={4 * conc}",
    ]
    body = [json.dumps(STREAM_BODY).encode()]
    out: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for name, flags in (("off", base), ("on", guarded)):
            front = FrontProcess(flags, args.server_cpus)
            try:
                hdr = {"Authorization": "Bearer bench-key"} if name == "on" else {}
                closed_loop(front.url, "/v1/completions", body, conc, 1.0, args.clients, hdr)
                out[name].append(
                    closed_loop(
                        front.url, "/v1/completions", body, conc, args.seconds, args.clients, hdr
                    )
                )
            finally:
                front.stop()
    return {"concurrency": conc, "tokens_per_request": STREAM_BODY["max_tokens"], **out}


def overload(args: argparse.Namespace) -> dict[str, Any]:
    bound = args.overload_in_flight
    body = json.dumps({"prompt": list(range(1, 33)), "max_tokens": 64}).encode()
    front = FrontProcess(["--engine_profile=fixed", f"--max_in_flight={bound}"], args.server_cpus)
    try:
        rss0 = front.rss_mb()
        cap = closed_loop(front.url, "/v1/completions", [body], bound, args.seconds, args.clients)
        over = open_loop(
            front.url,
            "/v1/completions",
            body,
            args.overload * cap["per_s"],
            args.overload_s,
            args.clients,
            front.rss_mb,
        )
        time.sleep(1.0)
        rss1 = front.rss_mb()
    finally:
        front.stop()
    return {
        "max_in_flight": bound,
        "capacity": cap,
        "overload": over,
        "rss_before_mb": rss0,
        "rss_after_mb": rss1,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = []
    if "route" in res:
        r = res["route"]
        lines += [
            f"POST /route, {r['prompts']} prompts; in process p50 "
            f"{r['in_process_p50_us']:.1f} us, p99 {r['in_process_p99_us']:.1f} us",
            "",
            "| concurrency | decisions/s | p50 ms | p95 ms | p99 ms | HTTP cost (p50) |",
            "|---|---|---|---|---|---|",
        ]
        for row in r["http"]:
            cost = row["p50_ms"] * 1e3 - r["in_process_p50_us"]
            lines.append(
                f"| {row['concurrency']} | {row['per_s']:,.0f} | {row['p50_ms']:.2f} | "
                f"{row['p95_ms']:.2f} | {row['p99_ms']:.2f} | {cost:.0f} us |"
            )
        lines.append("")
    if "capacity" in res:
        c = res["capacity"]
        lines += [
            f"Streamed /v1/completions, zero profile, {c['tokens_per_request']} tokens a "
            f"request, one event a token, concurrency {c['concurrency']}",
            "",
            "| keys, rate, admission | requests/s | events/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for name in ("off", "on"):
            for row in c[name]:
                lines.append(
                    f"| {name} | {row['per_s']:,.0f} | {row['events_per_s']:,.0f} | "
                    f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
                )
        lines.append("")
    if "overload" in res:
        o = res["overload"]
        cap, over = o["capacity"], o["overload"]
        lines += [
            f"Overload: fixed profile (64 tokens ~0.34 s), --max_in_flight "
            f"{o['max_in_flight']}; capacity {cap['per_s']:.0f}/s at p50 "
            f"{cap['p50_ms']:.0f} ms, p99 {cap['p99_ms']:.0f} ms",
            f"offered {over['offered_per_s']:.0f}/s: {over['statuses']}; admitted p50 "
            f"{over['ok_p50_ms']:.0f} ms, p99 {over['ok_p99_ms']:.0f} ms; refused p50 "
            f"{over['refused_p50_ms']:.1f} ms, p99 {over['refused_p99_ms']:.1f} ms; RSS "
            f"{o['rss_before_mb']:.0f} MB before, peak {over['rss_peak_mb']:.0f}, after "
            f"{o['rss_after_mb']:.0f}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(
        prog="python -m harness bench-front",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("what", nargs="*", default=[], help="route, capacity, overload (all)")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--server_cpus", default="", help="taskset -c list for the front")
    ap.add_argument("--prompts", default=str(REPO_ROOT / "build" / "router" / "corpus.jsonl"))
    ap.add_argument("--max_prompts", type=int, default=5000)
    ap.add_argument(
        "--routing_config", default=str(REPO_ROOT / "configs" / "routing" / "default.yaml")
    )
    ap.add_argument("--tokenizer", default=str(REPO_ROOT / "build" / "tiny-model"))
    ap.add_argument("--overload", type=float, default=2.0, help="offered load over capacity")
    ap.add_argument("--overload_s", type=float, default=60.0)
    ap.add_argument("--overload_in_flight", type=int, default=64)
    ap.add_argument("--out", default="build/bench")
    args = ap.parse_args(argv)
    what = args.what or ["route", "capacity", "overload"]
    bad = [w for w in what if w not in ("route", "capacity", "overload")]
    if bad:
        raise ConfigError(
            f"bench-front: unknown measurement {bad[0]!r} (route, capacity, overload)"
        )
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise ConfigError(
            f"bench-front: --concurrency {args.concurrency!r}: a comma list of integers"
        ) from None
    for name in ("seconds", "overload", "overload_s"):
        v = getattr(args, name)
        if not (np.isfinite(v) and v > 0):
            raise ConfigError(f"bench-front: --{name} must be a positive number, got {v}")
    if min(args.concurrency) < 1 or args.clients < 1 or args.repeats < 1:
        raise ConfigError("bench-front: --concurrency, --clients and --repeats must be >= 1")
    root = (Path(args.out) / time.strftime("%Y.%m.%d-%H.%M.%S")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"cpus_here": len(os.sched_getaffinity(0))}
    if "route" in what:
        res["route"] = route(args)
    if "capacity" in what:
        res["capacity"] = capacity(args, root)
    if "overload" in what:
        res["overload"] = overload(args)
    (root / "front.json").write_text(json.dumps(res, indent=1))
    print(markdown(res))
    print(f"\nresults: {root / 'front.json'}")
    return 0
