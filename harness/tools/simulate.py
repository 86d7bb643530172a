"""``python -m harness simulate``: a fleet of modelled engines in virtual time, one run per
traffic policy on the same seeded arrivals, a JSON summary each and a table.

    python -m harness simulate --engines cpu-tiny:6:0.4,h100-llama2-70b:1:4.0 \\
        --rate 300 --requests 100000 --policy round_robin,least_pending
    python -m harness simulate --arrival chat --prefix_cache_blocks 4096 --rate 100
    python -m harness simulate --benchmark deepseek-r1 --engines h200x8-deepseek-r1:4 --rate 4

``--benchmark`` draws prompt and output lengths from that benchmark's synthetic shape (its
YAML: deepseek-r1's long reasoning decodes, gpt-oss-120b's, ...; outputs capped at its
``max_new_tokens``) and takes its Server TTFT/TPOT limits from LoadGen's mlperf.conf unless
``--ttft_limit_ms``/``--tpot_limit_ms`` are given.

Engines are ``profile[:count[:price per hour]]`` from ``--profiles_file`` (the dummy core's
``configs/engine_profiles.yaml``); the policies are ``llmlib.serving.policies``'s, the code the
live ``LLMServer`` runs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.argparser import ArgParser
from harness.run.prepare import build_dataset
from llmlib.config.flags import KV_TRANSFER_FLAGS, parse_flag_string
from llmlib.config.settings import REPO_ROOT, Config
from llmlib.data.benchmarks import load_benchmark
from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest, arrivals, chat_arrivals
from llmlib.model.engine import get_profile, load_profiles, profile_from_config
from llmlib.model.simulator import EngineSpec, KVTransfer, simulate
from llmlib.serving.policies import POLICIES, POLICY_FLAGS, make_policy
from llmlib.serving.prefix import token_blocks

PROFILES = REPO_ROOT / "configs" / "engine_profiles.yaml"


def parse_engines(text: str, profiles_file: str | Path = PROFILES) -> list[EngineSpec]:
    """``name[:count[:price]],...`` -> engine specs (profiles from ``profiles_file``)."""
    profiles = load_profiles(profiles_file)
    specs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        bits = part.split(":")
        if len(bits) > 3:
            raise ConfigError(f"--engines: {part!r} is not profile[:count[:price per hour]]")
        try:
            count = int(bits[1]) if len(bits) > 1 else 1
            price = float(bits[2]) if len(bits) > 2 else 0.0
        except ValueError:
            raise ConfigError(
                f"--engines: {part!r}: count must be an integer and price a number"
            ) from None
        if count < 1 or price < 0:
            raise ConfigError(f"--engines: {part!r}: count at least 1, price not negative")
        specs.append(EngineSpec(get_profile(profiles, bits[0]), count, price))
    if not specs:
        raise ConfigError("--engines: give at least one profile[:count[:price]]")
    return specs


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


def main(argv: list[str]) -> int:
    ap = ArgParser(
        prog="python -m harness simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--engines", default="cpu-tiny:8:0.5", help="profile[:count[:price]],...")
    ap.add_argument("--profiles_file", default=str(PROFILES))
    ap.add_argument(
        "--policy",
        default=",".join(POLICIES),
        help=f"one or more of {', '.join(POLICIES)} (default: all)",
    )
    ap.add_argument(
        "--policy_flags",
        default="",
        help="tunables of the policy, key:value,... (e.g. kv_aware's load_weight:2; "
        "telemetry's ttft_target_ms, tpot_target_ms, migration_gap...)",
    )
    ap.add_argument(
        "--decode_engines",
        default="",
        help="disaggregated: the decode pool, profile[:count[:price]],... (--engines is then "
        "the prefill pool)",
    )
    ap.add_argument("--decode_policy", default="least_pending", help="the decode pool's policy")
    ap.add_argument("--decode_policy_flags", default="", help="its tunables, key:value,...")
    ap.add_argument(
        "--kv_transfer",
        default="base_us:1000,per_token_ns:3300",
        help="disaggregated: KV cache transfer, base_us:..,per_token_ns:.. per prefill engine's "
        "link (default: Llama-2-70B FP8's 160 KiB per token over 400 Gb/s, 1 ms set-up)",
    )
    ap.add_argument(
        "--arrival",
        default="poisson",
        choices=["poisson", "bursty", "chat"],
        help="chat: multi-turn conversations sharing system prompts and history",
    )
    ap.add_argument("--systems", type=int, default=8, help="chat: distinct system prompts")
    ap.add_argument("--system_len", type=int, default=1024, help="chat: system prompt tokens")
    ap.add_argument("--turns", type=float, default=4.0, help="chat: mean turns")
    ap.add_argument("--think_s", type=float, default=10.0, help="chat: mean gap between turns")
    ap.add_argument(
        "--prefix_cache_blocks",
        type=int,
        default=-1,
        help="every engine's prefix cache, in blocks of 16 tokens (-1: the profile's)",
    )
    ap.add_argument("--rate", type=float, default=300.0, help="mean arrivals per second")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument(
        "--prompt_len",
        type=int,
        default=0,
        help="median prompt tokens (chat: of each new user message); 0: 512, chat 128",
    )
    ap.add_argument("--output_len", type=int, default=128, help="median output tokens")
    ap.add_argument("--length_sigma", type=float, default=0.5, help="log-normal spread")
    ap.add_argument("--burst_cv", type=float, default=3.0, help="bursty: gap CV")
    ap.add_argument(
        "--benchmark",
        default="",
        help="draw lengths from this benchmark's shape and take its limits from mlperf.conf",
    )
    ap.add_argument("--ttft_limit_ms", type=float, default=None, help="default 2000")
    ap.add_argument("--tpot_limit_ms", type=float, default=None, help="default 200")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO_ROOT / "build" / "sim"), help="a directory")
    ap.add_argument(
        "--replay",
        default="",
        help="a dummy-core run directory: simulate its requests and compare TTFT with it",
    )
    return _run(ap.parse_args(argv))  # (errors: harness/cli.py says them, exit 2)


def benchmark_lengths(reqs: list[SimRequest], args: argparse.Namespace) -> list[SimRequest]:
    """``reqs`` (their arrival times) with prompt and output lengths drawn from
    ``args.benchmark``'s synthetic shape; its Server limits from mlperf.conf fill the ones
    not given."""
    from llmlib.eval.rules import official_settings

    if args.arrival == "chat":
        raise ConfigError("--benchmark draws independent requests: use --arrival poisson or bursty")
    spec = load_benchmark(REPO_ROOT / "configs", args.benchmark)
    rng = np.random.default_rng([args.seed, 0xB3])
    n = len(reqs)
    ins = spec.input_len.sample(rng, n)
    outs = np.minimum(spec.output_len.sample(rng, n), spec.max_new_tokens)
    conf = official_settings(spec.mlperf_model, "Server")
    if args.ttft_limit_ms is None:
        args.ttft_limit_ms = conf["ttft_latency"] / 1e6
    if args.tpot_limit_ms is None:
        args.tpot_limit_ms = conf["tpot_latency"] / 1e6
    args.prompt_len, args.output_len = float(np.median(ins)), float(np.median(outs))
    return [
        dataclasses.replace(r, prompt_len=int(i), output_len=max(1, int(o)))
        for r, i, o in zip(reqs, ins, outs, strict=True)
    ]


def _run(args: argparse.Namespace) -> int:
    if args.replay:
        replayed = replay(Path(args.replay))
        print(json.dumps(replayed, indent=1))
        return 0
    engines = parse_engines(args.engines, args.profiles_file)
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    flags = parse_flag_string(args.policy_flags, POLICY_FLAGS, "--policy_flags")

    def flags_for(policy: str) -> dict[str, Any]:  # the given keys this policy has
        return {k: v for k, v in flags.items() if k in POLICIES[policy].tunables}

    for p in policies:  # unknown names refused before the workload is built
        make_policy(p, 1, flags=flags_for(p))
    unused = set(flags) - {k for p in policies for k in POLICIES[p].tunables}
    if unused:
        raise ConfigError(
            f"--policy_flags: {', '.join(sorted(unused))} belong to none of {', '.join(policies)}"
        )
    decode = parse_engines(args.decode_engines, args.profiles_file) if args.decode_engines else []
    dflags = parse_flag_string(args.decode_policy_flags, POLICY_FLAGS, "--decode_policy_flags")
    make_policy(args.decode_policy, 1, flags=dflags)
    kv = KVTransfer.from_flags(
        parse_flag_string(args.kv_transfer, KV_TRANSFER_FLAGS, "--kv_transfer")
    )
    if args.prefix_cache_blocks >= 0:
        engines = [
            dataclasses.replace(
                e,
                profile=dataclasses.replace(
                    e.profile, prefix_cache_blocks=args.prefix_cache_blocks
                ),
            )
            for e in engines
        ]
    if args.prompt_len <= 0:
        args.prompt_len = 128 if args.arrival == "chat" else 512
    if args.arrival == "chat":
        reqs = chat_arrivals(
            args.requests, args.rate, args.seed, args.systems, args.system_len, args.turns,
            args.prompt_len, args.output_len, args.think_s, args.length_sigma,
        )  # fmt: skip
    else:
        reqs = arrivals(
            args.requests, args.rate, args.arrival, args.seed, args.prompt_len, args.output_len,
            args.length_sigma, args.burst_cv,
        )  # fmt: skip
    if args.benchmark:
        reqs = benchmark_lengths(reqs, args)
    args.ttft_limit_ms = 2000.0 if args.ttft_limit_ms is None else args.ttft_limit_ms
    args.tpot_limit_ms = 200.0 if args.tpot_limit_ms is None else args.tpot_limit_ms
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        "| policy | TTFT p50 / p95 / p99 ms | TPOT p50 / p95 ms | goodput rps | "
        "goodput per $ | prefix hits | busiest / mean | migrations | sim s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for policy in policies:
        t0 = time.perf_counter()
        res = simulate(
            reqs, engines, policy, args.seed, policy_flags=flags_for(policy),
            decode_engines=decode, decode_policy=args.decode_policy,
            decode_policy_flags=dflags, kv_transfer=kv,
        )  # fmt: skip
        took = time.perf_counter() - t0
        s = res.summary(args.ttft_limit_ms, args.tpot_limit_ms)
        s["workload"] = {k: getattr(args, k) for k in (
            "engines", "arrival", "rate", "requests", "prompt_len", "output_len",
            "length_sigma", "burst_cv", "seed", "systems", "system_len", "turns", "think_s",
            "prefix_cache_blocks", "policy_flags", "decode_engines", "decode_policy",
            "decode_policy_flags", "kv_transfer", "benchmark", "ttft_limit_ms",
            "tpot_limit_ms")}  # fmt: skip
        s["simulated_in_s"] = took
        path = out / f"sim-{policy}.json"
        path.write_text(json.dumps(s, indent=1) + "\n")
        t, p = s["ttft_ms"], s["tpot_ms"]
        gpd = s["goodput_per_dollar"]
        print(
            f"| {policy} | {t['p50']:.1f} / {t['p95']:.1f} / {t['p99']:.1f} | "
            f"{p.get('p50', 0):.2f} / {p.get('p95', 0):.2f} | {s['goodput_rps']:.1f} | "
            f"{'-' if gpd is None else f'{gpd:,.0f}'} | {s['prefix_hit_rate']:.1%} | "
            f"{s['per_engine']['busiest_over_mean']:.2f} | "
            f"{'-' if s['migrations'] is None else s['migrations']} | {took:.2f} |"
        )
    print(f"summaries: {out}/sim-<policy>.json")
    return 0
