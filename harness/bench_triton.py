"""``make bench-triton``: the triton_grpc core's sustained requests/s and TTFT against a real
Triton server, next to a peer client against the same server in the same session.

The server is nvidia-pytriton's tritonserver (``make triton``) running the tiny Llama in
the Python-backend model (``--instances`` stub processes). Both clients keep
``--concurrency`` streamed requests in flight (closed loop) for ``--seconds``, with the same
prompts and ``--output_len`` tokens each: the peer is a plain ``tritonclient.grpc`` loop
(one stream, callbacks resubmitting; perf_analyzer is not on this registry: perf-analyzer
is 0.1.0 there, a placeholder), ours is ``TritonGrpcCore`` with 1, 2 and 4 clients per
server. Rounds alternate peer/core so drift on this noisy machine hits both.

    python -m harness.bench_triton --seconds 10 --concurrency 16
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.config import REPO_ROOT, resolve
from llmlib.launch import LaunchedServer, ServerSpec, free_port
from llmlib.request import LLMRequest, LLMResponse
from llmlib.triton_repo import generate_triton_config


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

    firsts: set[str] = set()

    def cb(result: Any, error: Any) -> None:
        if error is not None:
            return
        r = result.get_response()
        now = time.perf_counter_ns()
        if r.id not in firsts and result.as_numpy("output_ids") is not None:
            firsts.add(r.id)
            ttft.append((now - sent[r.id]) / 1e6)
        if r.parameters["triton_final_response"].bool_param:
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
         clients: int) -> dict[str, Any]:  # fmt: skip
    """TritonGrpcCore with ``clients`` clients: ``conc`` in flight, each final issues the next."""
    from cores.triton_grpc import TritonGrpcCore

    explicit = {"triton_server_urls": [url], "triton_num_clients_per_server": clients}
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
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--output_len", type=int, default=8)
    ap.add_argument("--instances", type=int, default=2, help="Python-backend stub processes")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default=str(REPO_ROOT / "build" / "tiny-model"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-triton-"))
    generate_triton_config(work / "repo", "python", model_dir=args.model,
                           max_concurrency=args.concurrency, instances=args.instances)  # fmt: skip
    spec = ServerSpec("triton", str(work / "repo"), port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port())  # fmt: skip
    url = f"127.0.0.1:{spec.grpc_port}"
    ps = prompts(256)
    rows: dict[str, list[dict[str, Any]]] = {}
    with LaunchedServer(spec, work / "server.log"):
        core(url, ps, args.output_len, args.concurrency, 2.0, 1)  # warm the stubs
        for _ in range(args.rounds):
            rows.setdefault("peer (tritonclient loop)", []).append(
                peer(url, ps, args.output_len, args.concurrency, args.seconds)
            )
            for k in (1, 2, 4):
                rows.setdefault(f"triton_grpc, {k} client(s)", []).append(
                    core(url, ps, args.output_len, args.concurrency, args.seconds, k)
                )
    print(
        f"concurrency {args.concurrency}, {args.output_len} tokens per request, "
        f"{args.instances} stub processes, {args.seconds:g} s x {args.rounds} rounds"
    )
    print("| client | requests/s (rounds) | TTFT p50 ms | TTFT p95 ms |")
    print("|---|---|---|---|")
    for name, rs in rows.items():
        rps = " / ".join(f"{r['rps']:.1f}" for r in rs)
        p50 = float(np.median([r["ttft_p50_ms"] for r in rs]))
        p95 = float(np.median([r["ttft_p95_ms"] for r in rs]))
        print(f"| {name} | {rps} | {p50:.1f} | {p95:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
