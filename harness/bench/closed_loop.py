"""``python -m harness bench-closed-loop``: the simplest closed-loop client, for the engine's
own figure next to the harness's.

``--concurrency`` workers, each sending its next request as soon as its last one finished,
until ``--requests`` are done; the prompts are the benchmark's synthetic set (the ids the
harness would send, the same seed and vocabulary); unstreamed, greedy, ``max_new_tokens``
of the benchmark. llama.cpp's native ``/completion`` (token ids in, ``tokens_predicted``
out) or an OpenAI ``/v1/completions`` (``usage.completion_tokens``). No LoadGen, no
harness core: one aiohttp session and a counter. Prints one JSON line (tokens/s, requests/s,
latency quantiles) and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cores.openai.llamacpp import native_body
from harness.argparser import ArgParser
from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
from llmlib.errors import BackendError, ConfigError


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgParser(prog="python -m harness bench-closed-loop", description=__doc__)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--api", choices=("llamacpp", "completions"), default="llamacpp")
    ap.add_argument("--benchmark", default="llama3.1-8b")
    ap.add_argument("--config_dir", default=str(REPO_ROOT / "configs"))
    ap.add_argument("--vocab_size", type=int, default=128256)
    ap.add_argument("--sample_count", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=1024)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    for name in ("vocab_size", "sample_count", "requests", "concurrency"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1")
    return args


async def drive(args: argparse.Namespace, prompts: list[list[int]], max_new: int) -> Any:
    import aiohttp

    path = "/completion" if args.api == "llamacpp" else "/v1/completions"
    latencies: list[float] = []
    tokens = 0
    next_index = 0

    async def one(session: Any, prompt: list[int]) -> int:
        if args.api == "llamacpp":
            # (the harness's own body: the same greedy sampler chain, so the figures compare)
            body: dict[str, Any] = native_body(np.asarray(prompt), max_new, stream=False)
        else:
            body = {"prompt": prompt, "max_tokens": max_new, "temperature": 0.0, "model": ""}
        async with session.post(args.url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise BackendError(f"HTTP {resp.status} from {args.url}{path}: {data}")
        if args.api == "llamacpp":
            return int(data["tokens_predicted"])
        return int(data["usage"]["completion_tokens"])

    async def worker(session: Any) -> None:
        nonlocal tokens, next_index
        while next_index < args.requests:
            k = next_index
            next_index += 1
            t = time.perf_counter()
            n = await one(session, prompts[k % len(prompts)])
            tokens += n  # (after the await: `tokens += await ...` reads tokens before it)
            latencies.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    return {
        "client": "closed-loop",
        "url": args.url + path,
        "benchmark": args.benchmark,
        "requests": len(latencies),
        "concurrency": args.concurrency,
        "max_new_tokens": max_new,
        "output_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "requests_per_s": round(len(latencies) / wall, 3),
        "latency_s": {
            q: round(float(np.quantile(lat, p)), 3)
            for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    spec = load_benchmark(Path(args.config_dir), args.benchmark)
    ds = SyntheticDataset(spec, args.seed, args.vocab_size, args.sample_count)
    prompts = [ds.input_tokens(i).tolist() for i in range(len(ds))]
    try:
        result = asyncio.run(drive(args, prompts, spec.max_new_tokens))
    except (TimeoutError, OSError, KeyError, ValueError, TypeError) as exc:
        # (aiohttp's connection errors are OSErrors; a body without the count is garbage)
        raise BackendError(f"{args.url}: {type(exc).__name__}: {exc}") from None
    result["input_tokens_mean"] = round(float(np.mean([len(p) for p in prompts])), 1)
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")
    return 0
