"""``python -m harness simulate --replay RUN``: a finished run of the dummy core, simulated
(the same requests on as many engines of its profile, under its policy) and compared with
what it measured."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from harness.run.prepare import build_dataset
from llmlib.config.settings import Config
from llmlib.data.benchmarks import load_benchmark
from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest
from llmlib.model.engine import profile_from_config
from llmlib.model.simulator import EngineSpec, KVTransfer, simulate
from llmlib.serving.prefix import token_blocks


def replay(run_dir: Path, jitter_runs: int = 6, jitter_ms: float = 0.5) -> dict[str, Any]:
    """A finished run of the dummy core, simulated: the same requests (its dataset's prompt
    lengths, the tokens each answer had, LoadGen's issue times from ``requests.csv``) on as
    many engines of its profile, under its traffic policy. Returns both runs' TTFT
    percentiles and the ratio at p95 (live over simulated); the same with the live run's own
    placement (the engine model alone); and the simulated p95 over ``jitter_runs`` copies
    with arrivals moved by up to ``jitter_ms`` (seeded): how much p95 moves when a policy
    decides on slightly different timing, as the live run's harness timing does."""
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file() or not (run_dir / "requests.csv").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (spec.json and requests.csv)")
    cfg = Config.from_json(json.loads(spec_path.read_text())["config"])
    if cfg.core_type != "dummy":
        raise ConfigError(
            f"{run_dir}: a {cfg.core_type} run; replay needs the dummy core's (its engine model "
            "is what the simulator runs)"
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    ds = build_dataset(cfg, load_benchmark(cfg.config_dir, cfg.benchmark))
    profile = profile_from_config(cfg)
    if profile.is_zero:
        raise ConfigError(f"{run_dir}: the zero profile answers at once: nothing to simulate")
    rows = []
    with open(run_dir / "requests.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["error"] or not r["ttft_ms"]:
                continue
            rows.append((float(r["issue_ms"]), int(r["sample_index"]), int(r["n_tokens"]),
                         float(r["ttft_ms"]), int(r["core"])))  # fmt: skip
    if not rows:
        raise ConfigError(f"{run_dir}: no answered requests with a first-token time")
    rows.sort()
    cached = profile.prefix_cache_blocks > 0
    reqs = []
    for issue_ms, i, n_tokens, _, _ in rows:
        tokens = ds.input_tokens(i)
        blocks = token_blocks(tokens) if cached else ()
        reqs.append(SimRequest(int(issue_ms * 1e6), len(tokens), max(n_tokens, 1), blocks))
    cores = int(summary.get("num_cores") or cfg.num_cores)
    policy = str(summary.get("policy") or "least_pending")
    pools: dict[str, Any] = {"policy_flags": cfg.policy_flags}
    fleet = [EngineSpec(profile, cores)]
    if cfg.pd_flags:  # disaggregated: the same pools, policies and KV transfer
        fleet = [EngineSpec(profile, int(cfg.pd_flags["prefill"]))]
        pools.update(
            decode_engines=[EngineSpec(profile, int(cfg.pd_flags["decode"]))],
            decode_policy=cfg.decode_policy,
            decode_policy_flags=cfg.decode_policy_flags,
            kv_transfer=KVTransfer.from_flags(cfg.kv_transfer),
        )
    res = simulate(reqs, fleet, policy, cfg.policy_seed, **pools)
    sim = res.summary()
    same: dict[str, Any] | None = None
    agree = None
    if not cfg.pd_flags:  # (the log names the core that answered: a decode core there)
        # the same engines given the live run's own choices: the engine model alone,
        # without the policy deciding differently on slightly different timing
        placement = [r[4] for r in rows]
        same = simulate(reqs, fleet, policy, placement=placement, **pools).summary()
        agree = float(np.mean(res.engine == np.array(placement)))
    spread = []
    for seed in range(jitter_runs):
        rng = random.Random(seed)
        step = int(jitter_ms * 1e6)
        moved = [
            dataclasses.replace(r, arrival_ns=max(0, r.arrival_ns + rng.randint(-step, step)))
            for r in reqs
        ]
        moved.sort(key=lambda r: r.arrival_ns)
        got = simulate(moved, fleet, policy, cfg.policy_seed, **pools).summary()
        spread.append(got["ttft_ms"]["p95"])
    live_ttft = np.array([r[3] for r in rows])
    live = {f"p{q}": float(np.percentile(live_ttft, q)) for q in (50, 95, 99)}
    return {
        "run_dir": str(run_dir),
        "scenario": cfg.scenario,
        "profile": profile.name,
        "engines": cores,
        "pools": sim["pools"],
        "policy": policy,
        "requests": len(reqs),
        "live_ttft_ms": live,
        "sim_ttft_ms": sim["ttft_ms"],
        "p95_live_over_sim": live["p95"] / sim["ttft_ms"]["p95"],
        "sim_prefix_hit_rate": sim["prefix_hit_rate"],
        "placement_agreement": agree,
        # (None for a disaggregated run)
        "sim_live_placement_ttft_ms": same and same["ttft_ms"],
        "p95_live_over_sim_live_placement": same and live["p95"] / same["ttft_ms"]["p95"],
        "sim_live_placement_prefix_hit_rate": same and same["prefix_hit_rate"],
        "jitter": {"runs": jitter_runs, "ms": jitter_ms, "sim_p95_ms": spread},
        "live_p95_within_jitter_range": bool(spread) and min(spread) <= live["p95"] <= max(spread),
        "p95_live_over_jitter_median": live["p95"] / float(np.median(spread)) if spread else None,
    }
