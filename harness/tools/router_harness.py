"""``python -m harness router harness``: what routing costs a harness run. The routing core
over zero-cost dummy pools (sized from the traffic's shares) against the same traffic sent
straight to dummy cores, in interleaved pairs of short Offline runs."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.config.settings import REPO_ROOT
from llmlib.router.corpus import DEFAULT_ROUTER, EXPERTS
from llmlib.router.model import load_router


def size_pools(shares: dict[str, float], total: int) -> dict[str, int]:
    """Cores per pool, ``total`` in all, one at least each, the rest one by one to the pool
    with the most traffic per core (D'Hondt): the split with the lowest busiest-core load."""
    sizes = dict.fromkeys(shares, 1)
    for _ in range(total - len(shares)):
        busiest = max(shares, key=lambda e: shares[e] / sizes[e])
        sizes[busiest] += 1
    return sizes


def split_bound(shares: dict[str, float], sizes: dict[str, int]) -> float:
    """The best throughput ratio pools of ``sizes`` can reach against one pool of all their
    cores, for equal work per query: the mean core load over the busiest core's."""
    total = sum(sizes.values())
    return (sum(shares.values()) / total) / max(shares[e] / sizes[e] for e in shares)


def harness_cost(
    rows: list[dict[str, Any]],
    tokenizer: str,
    profile: str,
    out: Path,
    pairs: int = 2,
    duration_ms: int = 5000,
    min_cores: int = 6,
    max_cores: int = 24,
    bound: float = 0.97,
) -> dict[str, Any]:
    """Offline samples/s of the routing core over dummy pools against the dummy core alone
    with as many cores, same prompts (the held-out split) and engine ``profile``, in
    interleaved pairs (this machine drifts between minutes).

    A static split of the traffic over pools of whole cores cannot reach the throughput of
    one pool of all of them (with shares 49/38/13% over 6 cores, the busiest core carries
    1.15x the mean: 0.87 at best). So the pools are sized to the router's shares (D'Hondt)
    on the fewest cores from ``min_cores`` whose split allows ``bound`` or more; that bound
    is reported, and the ratio over it is the routing core's own cost."""
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    texts = [r["text"] for r in rows if r["split"] == "held_out"]
    with open(prompts, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}) + "\n")
    counts = Counter(load_router(DEFAULT_ROUTER, threshold=0.5).decide_batch(texts))
    shares = {e: counts[e] / len(texts) for e in EXPERTS}
    total = min_cores
    while total < max_cores and split_bound(shares, size_pools(shares, total)) < bound:
        total += 1
    sizes = size_pools(shares, total)
    pools = "\n".join(
        f"  {e}: {{core_type: dummy, num_cores: {sizes[e]}, flags: {{engine_profile: {profile}}}}}"
        for e in EXPERTS
    )
    conf = out / "routing.yaml"
    conf.write_text(
        f"router: {DEFAULT_ROUTER}\ndefault_expert: general\nconfidence_threshold: 0.5\n"
        f"tie_margin: 0.05\npools:\n{pools}\n"
    )
    common = [
        sys.executable,
        "-m",
        "harness",
        "--scenarios=offline",
        f"--dataset_path={prompts}",
        f"--tokenizer_path={tokenizer}",
        f"--min_duration={duration_ms}",
        "--min_query_count=500",
        "--offline_expected_qps=2000" if profile != "zero" else "--offline_expected_qps=100000",
        "--progress=false",
        "--warmup_queries=0",
    ]
    kinds = {
        "dummy": [f"--engine_profile={profile}", f"--num_cores={sum(sizes.values())}"],
        "routing": ["--core_type=routing", f"--routing_config={conf}"],
    }
    res: dict[str, Any] = {
        "profile": profile,
        "pool_cores": sizes,
        "shares": shares,
        "split_bound": split_bound(shares, sizes),
        "pairs": [],
    }
    for i in range(pairs):
        pair = {}
        for kind, extra in kinds.items():
            log_dir = out / f"{profile}-{kind}-{i}"
            shutil.rmtree(log_dir, ignore_errors=True)  # (read back below: this run's only)
            subprocess.run(
                [*common, *extra, f"--log_dir={log_dir}"],
                check=True,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
            )
            summary = json.loads(next(log_dir.rglob("summary.json")).read_text())
            pair[kind] = summary["loadgen"]["samples_per_second"]
        pair["ratio"] = pair["routing"] / pair["dummy"]
        res["pairs"].append(pair)
    res["median_ratio"] = float(np.median([p["ratio"] for p in res["pairs"]]))
    res["median_ratio_over_bound"] = res["median_ratio"] / res["split_bound"]
    return res


# --- CLI --------------------------------------------------------------------------------------
