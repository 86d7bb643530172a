"""``make bench-triton``: the triton_grpc core's sustained requests/s and TTFT against a real
Triton server, next to a peer client against the same server in the same session.

The server is nvidia-pytriton's tritonserver (``make triton``) running, in the
Python-backend model (``--instances`` stub processes), the tiny Llama (``--server tiny``,
the server is the ceiling on a small machine) or the counting model (``--server
counting``: no weights, ``--token_interval_ms`` apart, so the client's own ceiling shows).
Every client keeps ``--concurrency`` streamed requests in flight (closed loop) for
``--seconds``, with the same prompts and ``--output_len`` tokens each: the peer is a plain
``tritonclient.grpc`` loop in one process (one stream, callbacks keeping each response's
tokens and resubmitting; perf_analyzer is not on this registry: perf-analyzer is 0.1.0
there, a placeholder), ours is ``TritonGrpcCore`` with one client in the harness's
process, then with each of ``--clients`` client processes. Rounds alternate peer/core so
drift on a noisy machine hits both.

    python -m harness bench-triton --seconds 10 --concurrency 16
    python -m harness bench-triton --server counting --output_len 32 --concurrency 256 \
        --instances 8 --clients 1,2,4,8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.argparser import ArgParser
from llmlib.config.settings import REPO_ROOT, resolve
from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_ports
from llmlib.deploy.triton.repo import generate_triton_config
from llmlib.serving.request import LLMRequest, LLMResponse


def prompts(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 2048, int(rng.integers(16, 128)), dtype=np.int32) for _ in range(n)]


def _closed_loop(
    issue: Any, conc: int, seconds: float, done: list[int], ttft: list[float]
) -> dict[str, Any]:
    """Start ``conc`` requests (each answer issues the next), wait ``seconds``; the rate and
    TTFT percentiles."""
    t0 = time.perf_counter()
    for _ in range(conc):
        issue()
    time.sleep(seconds)
    took = time.perf_counter() - t0
    return {"rps": done[0] / took, "ttft_p50_ms": float(np.median(ttft)),
            "ttft_p95_ms": float(np.percentile(ttft, 95))}  # fmt: skip


def peer(url: str, ps: list[np.ndarray], out_len: int, conc: int, seconds: float) -> dict[str, Any]:
    """A plain tritonclient loop: ``conc`` requests in flight, each answer sends the next."""
    import tritonclient.grpc as g

    client = g.InferenceServerClient(url)
    lock = threading.Lock()
    sent: dict[str, int] = {}
    ttft: list[float] = []
    done = [0]
    stop = time.perf_counter() + seconds
    nxt = [0]

    def submit() -> None:
        with lock:
            k = nxt[0]
            nxt[0] += 1
            rid = str(k)
            sent[rid] = time.perf_counter_ns()
        ids = ps[k % len(ps)].reshape(1, -1)
        ins = []
        for name, arr, dt in (
            ("input_ids", ids, "INT32"),
            ("input_lengths", np.array([[ids.shape[1]]], np.int32), "INT32"),
            ("request_output_len", np.array([[out_len]], np.int32), "INT32"),
            ("streaming", np.array([[True]]), "BOOL"),
        ):
            t = g.InferInput(name, list(arr.shape), dt)
            t.set_data_from_numpy(arr)
            ins.append(t)
        client.async_stream_infer("tensorrt_llm", ins, request_id=rid,
                                  enable_empty_final_response=True)  # fmt: skip

    got: dict[str, list[np.ndarray]] = {}

    def cb(result: Any, error: Any) -> None:
        if error is not None:
            return
        r = result.get_response()
        now = time.perf_counter_ns()
        ids = result.as_numpy("output_ids")  # every response's tokens kept, as a client must
        if ids is not None:
            mine = got.setdefault(r.id, [])
            if not mine:
                ttft.append((now - sent[r.id]) / 1e6)
            mine.append(ids.reshape(-1))
        if r.parameters["triton_final_response"].bool_param:
            got.pop(r.id, None)
            with lock:
                done[0] += 1
            if time.perf_counter() < stop:
                submit()

    client.start_stream(callback=cb)
    try:
        return _closed_loop(submit, conc, seconds, done, ttft)
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def core(url: str, ps: list[np.ndarray], out_len: int, conc: int, seconds: float,
         clients: int, in_process: bool) -> dict[str, Any]:  # fmt: skip
    """TritonGrpcCore with ``clients`` clients: ``conc`` in flight, each final issues the next."""
    from cores.triton.core import TritonGrpcCore

    explicit = {"triton_server_urls": [url], "triton_num_clients_per_server": clients,
                "triton_clients_in_process": in_process, "triton_end_id": "none"}  # fmt: skip
    cfg = resolve({}, benchmark="tiny", scenario="server", env={}, explicit=explicit)
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    issued: dict[int, int] = {}
    ttft: list[float] = []
    done = [0]
    nxt = [0]
    c: TritonGrpcCore

    def issue() -> None:
        with lock:
            k = nxt[0]
            nxt[0] += 1
        now = time.perf_counter_ns()
        issued[k] = now
        c.enqueue([LLMRequest(k, k, ps[k % len(ps)], out_len, True, None, None, now)])

    def callback(responses: Any) -> None:
        for r in responses:
            assert isinstance(r, LLMResponse)
            if not r.is_final:
                ttft.append((r.time_ns - issued[r.request_id]) / 1e6)
                continue
            with lock:
                done[0] += 1
            if time.perf_counter() < stop:
                issue()

    c = TritonGrpcCore(0, cfg, callback)
    try:
        c.run_health_check()
        return _closed_loop(issue, conc, seconds, done, ttft)
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m harness bench-triton", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--output_len", type=int, default=8)
    ap.add_argument("--instances", type=int, default=2, help="Python-backend stub processes")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--server", choices=("tiny", "counting"), default="tiny")
    ap.add_argument("--model", default=str(REPO_ROOT / "build" / "tiny-model"))
    ap.add_argument("--token_interval_ms", type=float, default=0.0, help="counting model")
    ap.add_argument("--clients", default="1,2,4", help="client processes per server, a list")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-triton-"))
    per_instance = max(1, -(-args.concurrency // args.instances))  # every request served at once
    generate_triton_config(work / "repo", "python" if args.server == "tiny" else "counting",
                           model_dir=args.model if args.server == "tiny" else "",
                           max_concurrency=per_instance, instances=args.instances,
                           vocab_size=2048, token_interval_ms=args.token_interval_ms)  # fmt: skip
    http, grpc, metrics = free_ports(3)
    spec = ServerSpec("triton", str(work / "repo"), port=http, grpc_port=grpc, metrics_port=metrics)
    url = f"127.0.0.1:{spec.grpc_port}"
    ps = prompts(256)
    clients = [int(k) for k in args.clients.split(",")]
    rows: dict[str, list[dict[str, Any]]] = {}
    n, conc, secs = args.output_len, args.concurrency, args.seconds
    with LaunchedServer(spec, work / "server.log"):
        core(url, ps, n, conc, 2.0, 1, True)  # warm the stubs
        for _ in range(args.rounds):
            rows.setdefault("peer (tritonclient loop, 1 process)", []).append(
                peer(url, ps, n, conc, secs)
            )
            rows.setdefault("triton_grpc, 1 client in process", []).append(
                core(url, ps, n, conc, secs, 1, True)
            )
            for k in clients:
                rows.setdefault(f"triton_grpc, {k} client process(es)", []).append(
                    core(url, ps, n, conc, secs, k, False)
                )
    model = "tiny Llama"
    if args.server == "counting":
        model = f"counting model ({args.token_interval_ms:g} ms/token)"
    print(
        f"{model}, concurrency {conc}, {n} tokens per request, {args.instances} stub "
        f"processes, {secs:g} s x {args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    print("| client | requests/s (rounds) | tokens/s (median) | TTFT p50 ms | TTFT p95 ms |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        rps = " / ".join(f"{r['rps']:.1f}" for r in rs)
        med = float(np.median([r["rps"] for r in rs]))
        p50 = float(np.median([r["ttft_p50_ms"] for r in rs]))
        p95 = float(np.median([r["ttft_p95_ms"] for r in rs]))
        print(f"| {name} | {rps} | {med * n:.0f} | {p50:.1f} | {p95:.1f} |")
    return 0
