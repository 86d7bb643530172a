"""``python -m harness bench-client``: what the endpoint client costs per request and per
streamed event, with no server in the way (issue 23: how many client cores a million
streamed tokens a second needs).

Streams are recorded first from llmlib's serving front (``zero`` profile: answers at once;
``--stream_events token``: one SSE event a token, as engines stream): ``/v1/completions``
with token ids (vLLM's ``return_token_ids``), and ``/v1/chat/completions`` (text deltas
only). A third set is made from the chat streams: each event's text split into one event a
character, the same JSON around it (the worst case MLCommons' endpoints client measures).
Then each recorded stream is parsed in this process as the client parses it (a ``Stream``
fed line by line, the output ids taken at the end) ``--repeats`` times, timed in CPU time
(``time.process_time_ns``). Next to it, what the standard library's decoder alone costs on
the same events (``json.loads`` of each and nothing else: the floor of a client built on
it; the endpoint client decodes with msgspec, and is below it).

With ``--live``, the same client then runs against a server cheaper than itself
(``harness.bench.replay``: the recorded completions streams written back, one chunk an
event), each in a process of its own, at each of ``--live_concurrency``: its CPU time per
event with its sockets, aiohttp and event loop, next to the server's, and the same for
vLLM's benchmark client where the vllm extra is installed; rounds alternate the clients.

With ``--capacity "FLAGS;FLAGS..."``, the whole harness (LoadGen Offline, the ``openai``
core, streamed) runs against the replay server (``--replay_processes`` of it, one port)
once per flag set a round, e.g. ``--workers_per_core=4;--workers_per_core=4
--client_backend=ray``: tokens/s for each, with the server's CPU per event beside it (a
server at a core's worth of CPU is the ceiling, not the client). ``--replay_cpus`` and
``--client_cpus`` (CPU lists, ``0-5,8``) keep the server and each harness run, with what it
starts, on CPUs of their own.

Results go to build/bench/<stamp>/client_cost.json; markdown tables are printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from harness.serve.process import FrontProcess
from llmlib.config.settings import REPO_ROOT


def record(url: str, path: str, body: dict[str, Any]) -> list[bytes]:
    """One streamed response's lines, as the server sent them."""
    req = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return [line for line in r.read().split(b"\n") if line.strip()]


def cpu_list(raw: str) -> set[int]:
    """A CPU list as taskset takes it ("0-5,8"; "": none), each CPU one this process may
    run on; ValueError says what is wrong."""
    from llmlib.deploy.topology import parse_cpulist

    cpus: set[int] = set()
    for part in filter(None, raw.split(",")):
        try:
            got = parse_cpulist(part)
        except ValueError:
            got = []
        if not got:  # (a reversed range is empty)
            raise ValueError(f"'{part}' is not a CPU or a range of CPUs (0-5,8)")
        cpus.update(got)
    if raw and not cpus:
        raise ValueError("no CPU in it (0-5,8)")
    allowed = os.sched_getaffinity(0)
    if cpus - allowed:
        raise ValueError(f"CPU {min(cpus - allowed)} is not one this process may run on "
                         f"({len(allowed)} allowed, up to {max(allowed)})")  # fmt: skip
    return cpus


def per_char(lines: list[bytes]) -> list[bytes]:
    """A chat stream with each content delta split into one event a character."""
    out = []
    for line in lines:
        data = line[5:].strip() if line.startswith(b"data:") else b""
        if not data or data == b"[DONE]":
            out.append(line)
            continue
        obj = json.loads(data)
        delta = obj["choices"][0].get("delta") or {}
        text = delta.get("content") or ""
        if len(text) <= 1:
            out.append(line)
            continue
        for ch in text:
            delta["content"] = ch
            out.append(b"data: " + json.dumps(obj).encode())
    return out


def parse_client(lines: list[bytes]) -> int:
    """The endpoint client's work on one stream: feed every line, then its output ids (the
    server's, or the text's where the stream had none: counted, not re-tokenized here)."""
    from cores.openai.stream import Stream

    s = Stream()
    for raw in lines:
        s.feed(raw)
    assert s.done, "a recorded stream ends with [DONE]"
    return len(s.ids) if s.server_ids else len("".join(s.texts))


def parse_floor(lines: list[bytes]) -> int:
    """``json.loads`` of each event and nothing else."""
    n = 0
    for raw in lines:
        data = raw[5:].strip()
        if data != b"[DONE]":
            json.loads(data)
            n += 1
    return n


def cpu_us(fn: Any, streams: list[list[bytes]], repeats: int) -> float:
    """CPU microseconds for ``fn`` over every stream, per pass (the best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time_ns()
        for lines in streams:
            fn(lines)
        best = min(best, (time.process_time_ns() - t0) / 1e3)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m harness bench-client", description=__doc__)
    ap.add_argument("--requests", type=int, default=200, help="streams recorded per kind")
    ap.add_argument("--max_tokens", type=int, default=128, help="tokens a stream")
    ap.add_argument("--repeats", type=int, default=7, help="parse passes (the best is kept)")
    ap.add_argument("--out", default="", help="results folder (default build/bench/<stamp>)")
    ap.add_argument(
        "--tokenizer_path",
        default=str(REPO_ROOT / "build" / "tiny-model"),
        help="the front's tokenizer, for chat (default: make tiny-model's)",
    )
    ap.add_argument("--live", action="store_true", help="also against a replay server")
    ap.add_argument("--live_requests", type=int, default=400, help="requests a live run")
    ap.add_argument("--live_concurrency", default="1,32", help="comma list: requests in flight")
    ap.add_argument("--live_rounds", type=int, default=3, help="live runs a client and level")
    ap.add_argument("--capacity", default="", help="flag sets (';' apart) for harness runs")
    ap.add_argument("--capacity_rounds", type=int, default=2, help="runs a flag set")
    ap.add_argument("--capacity_qps", type=float, default=400.0, help="Offline expected QPS")
    ap.add_argument("--capacity_ms", type=int, default=5000, help="Offline min duration")
    ap.add_argument("--replay_processes", type=int, default=1, help="replay server processes")
    ap.add_argument("--replay_cpus", default="", help="CPUs of the replay server (0-5,8)")
    ap.add_argument("--client_cpus", default="", help="CPUs of each --capacity harness run")
    args = ap.parse_args(argv)
    for name in ("replay_cpus", "client_cpus"):
        try:
            setattr(args, name, sorted(cpu_list(getattr(args, name))))
        except ValueError as exc:
            ap.error(f"--{name}={getattr(args, name)}: {exc}")
    if min(args.requests, args.max_tokens, args.repeats, args.live_requests, args.live_rounds,
           args.capacity_rounds, args.capacity_ms, args.replay_processes) < 1:  # fmt: skip
        ap.error("--requests, --max_tokens, --repeats, --live_*, --capacity_rounds, "
                 "--capacity_ms and --replay_processes must be at least 1")  # fmt: skip
    if not 0 < args.capacity_qps < float("inf"):
        ap.error(f"--capacity_qps={args.capacity_qps}: a number above 0")
    try:
        levels = [int(x) for x in args.live_concurrency.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        ap.error(f"--live_concurrency={args.live_concurrency}: a comma list of whole numbers >= 1")
    if not (Path(args.tokenizer_path) / "tokenizer.json").is_file():
        ap.error(f"--tokenizer_path: no tokenizer.json in {args.tokenizer_path} (make tiny-model)")
    front = FrontProcess(["--engine_profile=zero", "--stream_events=token",
                          f"--tokenizer_path={args.tokenizer_path}"])  # fmt: skip
    try:
        kinds: dict[str, list[list[bytes]]] = {"completions, token ids": [], "chat, text": []}
        for k in range(args.requests):
            prompt = [1 + (k + j) % 500 for j in range(32)]
            body = {"prompt": prompt, "max_tokens": args.max_tokens, "stream": True,
                    "return_token_ids": True, "ignore_eos": True}  # fmt: skip
            kinds["completions, token ids"].append(record(front.url, "/v1/completions", body))
            chat = {"messages": [{"role": "user", "content": f"question {k}"}],
                    "max_tokens": args.max_tokens, "stream": True, "ignore_eos": True}  # fmt: skip
            kinds["chat, text"].append(record(front.url, "/v1/chat/completions", chat))
    finally:
        front.stop()
    kinds["chat, one character an event"] = [per_char(x) for x in kinds["chat, text"]]
    rows: list[dict[str, Any]] = []
    for kind, streams in kinds.items():
        events = sum(parse_floor(x) for x in streams)
        client = cpu_us(parse_client, streams, args.repeats)
        floor = cpu_us(parse_floor, streams, args.repeats)
        n = len(streams)
        rows.append({"kind": kind, "requests": n, "events": events, "client_us": client,
                     "floor_us": floor, "client_us_per_request": client / n,
                     "client_us_per_event": client / events, "floor_us_per_event": floor / events,
                     "events_per_s_per_core": events / client * 1e6})  # fmt: skip
    out = Path(args.out or REPO_ROOT / "build" / "bench" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    table(["stream", "events a request", "client us/request", "client us/event",
           "json.loads us/event", "events/s a core"],
          [[r["kind"], f"{r['events'] / r['requests']:.0f}", f"{r['client_us_per_request']:.1f}",
            f"{r['client_us_per_event']:.2f}", f"{r['floor_us_per_event']:.2f}",
            f"{r['events_per_s_per_core']:,.0f}"] for r in rows])  # fmt: skip
    live = []
    if args.live:
        try:
            live = run_live(kinds["completions, token ids"], out, levels, args)
        except RuntimeError as exc:  # a client or the replay server that failed
            print(f"error: bench-client --live: {exc}", file=sys.stderr)
            return 2
        table(["client (live, replay server)", "in flight", "runs", "client us/event",
               "server us/event", "events/s (wall)"],
              [[r["client"], str(r["concurrency"]), str(r["runs"]),
                each(r["client_us_per_event"], ".1f"), each(r["server_us_per_event"], ".1f"),
                each(r["events_per_s"], ",.0f")] for r in live])  # fmt: skip
    capacity = []
    if args.capacity:
        try:
            capacity = run_capacity(kinds["completions, token ids"], out, args)
        except RuntimeError as exc:
            print(f"error: bench-client --capacity: {exc}", file=sys.stderr)
            return 2
        table(["harness flags (Offline, replay server)", "runs", "tokens/s",
               "server us/event", "validity"],
              [[r["flags"] or "(in process)", str(len(r["tokens_per_s"])),
                each(r["tokens_per_s"], ",.0f"), each(r["server_us_per_event"], ".1f"),
                ", ".join(sorted(set(r["validity"])))] for r in capacity])  # fmt: skip
    (out / "client_cost.json").write_text(json.dumps(
        {"args": vars(args), "rows": rows, "live": live, "capacity": capacity}, indent=1
    ))  # fmt: skip
    print(f"results: {out / 'client_cost.json'}")
    return 0


def each(values: list[float], fmt: str) -> str:
    """A run's figures, ``a / b / c``."""
    return " / ".join(format(x, fmt) for x in values)


def table(head: list[str], rows: list[list[str]]) -> None:
    """A markdown table on stdout, a blank line before it."""
    print(f"\n| {' | '.join(head)} |\n|{'---|' * len(head)}")
    for r in rows:
        print(f"| {' | '.join(r)} |")


def run_live(
    streams: list[list[bytes]], out: Path, levels: list[int], args: Any
) -> list[dict[str, Any]]:
    """Each client at each level against the replay server, ``--live_rounds`` times,
    alternating: per client and level, each run's CPU us an event (the server's events over
    the run), the server's, and events a second of wall time."""
    import importlib.util

    from harness.bench.replay import ReplayServer, run_client

    clients = ["llmlib"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    got: dict[tuple[str, int], dict[str, list[float]]] = {}
    server = ReplayServer(streams, out)
    try:
        for _ in range(args.live_rounds):
            for c in levels:
                for kind in clients:
                    r = run_client(kind, server, args.live_requests, c, args.max_tokens)
                    if r["failed"]:
                        raise RuntimeError(f"the {kind} client failed {r['failed']} requests")
                    ev = r["server_events"]
                    g = got.setdefault((kind, c), {"c": [], "s": [], "w": [], "e": []})
                    g["e"].append(ev)
                    g["c"].append(r["cpu_s"] / ev * 1e6)
                    g["s"].append(r["server_cpu_s"] / ev * 1e6)
                    g["w"].append(ev / r["wall_s"])
    finally:
        server.stop()
    return [
        {
            "client": k,
            "concurrency": c,
            "runs": len(g["c"]),
            "client_us_per_event": g["c"],
            "server_us_per_event": g["s"],
            "events_per_s": g["w"],
            "events": g["e"],
        }
        for (k, c), g in sorted(got.items(), key=lambda x: (x[0][1], x[0][0]))
    ]


def run_capacity(streams: list[list[bytes]], out: Path, args: Any) -> list[dict[str, Any]]:
    """The harness against the replay server, each flag set of ``--capacity`` once a round:
    per flag set, each run's tokens/s (the harness's count), the server's CPU us an event
    over the run, LoadGen's validity and the requests completed and failed."""
    import shlex
    import subprocess

    from harness.bench.replay import ReplayServer, pinned

    sets = [x.strip() for x in args.capacity.split(";")]
    got: dict[str, dict[str, list[Any]]] = {f: {"t": [], "s": [], "v": [], "n": []} for f in sets}
    server = ReplayServer(streams, out, args.replay_processes, set(args.replay_cpus))
    try:
        for r in range(args.capacity_rounds):
            for k, flags in enumerate(sets):
                log = out / "capacity" / f"{r}-{k}"
                s0 = server.stats()
                p = subprocess.run(
                    [sys.executable, "-m", "harness", "--core_type=openai",
                     f"--server_urls={server.url}", "--scenarios=offline", "--benchmarks=tiny",
                     f"--offline_expected_qps={args.capacity_qps:g}",
                     f"--min_duration={args.capacity_ms}", "--progress=false", "--plots=false",
                     f"--log_dir={log}", *shlex.split(flags)],
                    capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800,
                    preexec_fn=pinned(set(args.client_cpus)),
                )  # fmt: skip
                s1 = server.stats()
                found = list(log.rglob("summary.json"))
                if p.returncode != 0 or not found:
                    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"the run with {flags or 'no flags'} failed: {tail}")
                summary = json.loads(found[0].read_text())
                h, g = summary["harness"], got[flags]
                g["t"].append(h["tokens_per_second"])
                g["s"].append((s1["cpu_s"] - s0["cpu_s"]) / max(1, s1["events"] - s0["events"])
                              * 1e6)  # fmt: skip
                g["v"].append(summary["validity"])
                g["n"].append((h["completed"], h["failed"]))
    finally:
        server.stop()
    return [
        {
            "flags": f,
            "tokens_per_s": g["t"],
            "server_us_per_event": g["s"],
            "validity": g["v"],
            "completed_failed": g["n"],
        }  # fmt: skip
        for f, g in got.items()
    ]
