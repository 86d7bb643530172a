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
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.argparser import ArgParser
from llmlib.config.flags import KV_TRANSFER_FLAGS, parse_flag_string
from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import load_benchmark
from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest, arrivals, chat_arrivals
from llmlib.model.engine import get_profile, load_profiles
from llmlib.model.simulator import EngineSpec, KVTransfer, simulate
from llmlib.serving.policies import POLICIES, POLICY_FLAGS, make_policy

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


def main(argv: list[str]) -> int:
    ap = ArgParser(
        prog="python -m harness simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--engines",
        default="cpu-tiny:8:0.5",
        help="profile[:count[:price]],... (with --sweep, fleets separated by ';')",
    )
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
    ap.add_argument(
        "--rate", default="300", help="mean arrivals per second (with --sweep, a list: 50,100)"
    )
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
    ap.add_argument("--seed", default="0", help="the workload's seed (with --sweep, a list)")
    ap.add_argument("--out", default=str(REPO_ROOT / "build" / "sim"), help="a directory")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="every fleet x policy x rate x seed, each one run (harness.tools.sweep): one "
        "table, sweep.json, sweep.csv and sweep.png in --out",
    )
    ap.add_argument(
        "--sweep_backend",
        default="ray",
        choices=["ray", "process"],
        help="ray: the runs as Ray tasks, on this machine's cores or the cluster at "
        "--ray_address (the ray extra); process: one after another in this process",
    )
    ap.add_argument(
        "--ray_address",
        default="",
        help="a running Ray cluster (host:port, or auto); '' starts one on this machine",
    )
    ap.add_argument(
        "--ray_connect_timeout_s",
        type=float,
        default=30.0,
        help="how long to wait for the cluster at --ray_address (Ray itself waits for ever on "
        "a port that is not a cluster's)",
    )
    ap.add_argument(
        "--ray_cpus",
        type=int,
        default=0,
        help="the Ray started here: CPUs to use (0: all); ignored with --ray_address",
    )
    ap.add_argument(
        "--replay",
        default="",
        help="a dummy-core run directory: simulate its requests and compare TTFT with it",
    )
    return _run(ap.parse_args(argv))  # (errors: harness/cli.py says them, exit 2)


def benchmark_lengths(
    reqs: list[SimRequest], args: argparse.Namespace, seed: int
) -> list[SimRequest]:
    """``reqs`` (their arrival times) with prompt and output lengths drawn from
    ``args.benchmark``'s synthetic shape; its Server limits from mlperf.conf fill the ones
    not given."""
    from llmlib.eval.rules import official_settings

    if args.arrival == "chat":
        raise ConfigError("--benchmark draws independent requests: use --arrival poisson or bursty")
    spec = load_benchmark(REPO_ROOT / "configs", args.benchmark)
    rng = np.random.default_rng([seed, 0xB3])
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


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every run of one ``simulate`` command shares, checked before any run."""

    policies: list[str]
    flags: dict[str, Any]
    decode: list[EngineSpec]
    decode_flags: dict[str, Any]
    kv: KVTransfer

    def flags_for(self, policy: str) -> dict[str, Any]:
        return tunable(self.flags, policy)


def tunable(flags: dict[str, Any], policy: str) -> dict[str, Any]:
    """The keys of ``flags`` that ``policy`` has."""
    return {k: v for k, v in flags.items() if k in POLICIES[policy].tunables}


def setup(args: argparse.Namespace) -> Setup:
    """The policies and pools ``args`` name, checked (a ConfigError for any unknown name or
    flag, before the workload is built)."""
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    flags = parse_flag_string(args.policy_flags, POLICY_FLAGS, "--policy_flags")
    for p in policies:
        make_policy(p, 1, flags=tunable(flags, p))
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
    return Setup(policies, flags, decode, dflags, kv)


def fleet(args: argparse.Namespace, engines: str) -> list[EngineSpec]:
    """The engines ``profile[:count[:price]],...`` with ``--prefix_cache_blocks`` applied."""
    specs = parse_engines(engines, args.profiles_file)
    if args.prefix_cache_blocks < 0:
        return specs
    return [
        dataclasses.replace(
            e, profile=dataclasses.replace(e.profile, prefix_cache_blocks=args.prefix_cache_blocks)
        )
        for e in specs
    ]


def workload(args: argparse.Namespace, rate: float, seed: int) -> list[SimRequest]:
    """The seeded requests of ``args``'s arrival process at ``rate``; with ``--benchmark``
    its lengths (and, where not given, its limits: ``args`` is updated)."""
    if args.prompt_len <= 0:
        args.prompt_len = 128 if args.arrival == "chat" else 512
    if args.arrival == "chat":
        reqs = chat_arrivals(
            args.requests, rate, seed, args.systems, args.system_len, args.turns,
            args.prompt_len, args.output_len, args.think_s, args.length_sigma,
        )  # fmt: skip
    else:
        reqs = arrivals(
            args.requests, rate, args.arrival, seed, args.prompt_len, args.output_len,
            args.length_sigma, args.burst_cv,
        )  # fmt: skip
    if args.benchmark:
        reqs = benchmark_lengths(reqs, args, seed)
    args.ttft_limit_ms = 2000.0 if args.ttft_limit_ms is None else args.ttft_limit_ms
    args.tpot_limit_ms = 200.0 if args.tpot_limit_ms is None else args.tpot_limit_ms
    return reqs


def run_one(
    args: argparse.Namespace,
    su: Setup,
    reqs: list[SimRequest],
    engines: list[EngineSpec],
    policy: str,
    seed: int,
) -> dict[str, Any]:
    """One simulation: its summary, with the workload that made it and its own time."""
    t0 = time.perf_counter()
    res = simulate(
        reqs, engines, policy, seed, policy_flags=su.flags_for(policy),
        decode_engines=su.decode, decode_policy=args.decode_policy,
        decode_policy_flags=su.decode_flags, kv_transfer=su.kv,
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
    return s


TABLE_HEAD = (
    "| policy | TTFT p50 / p95 / p99 ms | TPOT p50 / p95 ms | end-to-end p50 / p95 s | "
    "goodput rps | goodput per $ | prefix hits | busiest / mean | migrations | sim s |"
)


def table_row(name: str, s: dict[str, Any]) -> str:
    t, p, e = s["ttft_ms"], s["tpot_ms"], s.get("e2e_ms") or {}
    gpd = s["goodput_per_dollar"]
    return (
        f"| {name} | {t['p50']:.1f} / {t['p95']:.1f} / {t['p99']:.1f} | "
        f"{p.get('p50', 0):.2f} / {p.get('p95', 0):.2f} | "
        f"{e.get('p50', 0) / 1e3:.1f} / {e.get('p95', 0) / 1e3:.1f} | {s['goodput_rps']:.1f} | "
        f"{'-' if gpd is None else f'{gpd:,.0f}'} | {s['prefix_hit_rate']:.1%} | "
        f"{s['per_engine']['busiest_over_mean']:.2f} | "
        f"{'-' if s['migrations'] is None else s['migrations']} | {s['simulated_in_s']:.2f} |"
    )


def _run(args: argparse.Namespace) -> int:
    if args.replay:
        from harness.tools.replay import replay

        replayed = replay(Path(args.replay))
        print(json.dumps(replayed, indent=1))
        return 0
    if args.sweep:
        from harness.tools.sweep import sweep

        return sweep(args)
    rate, seed = single(args.rate, "rate", float), single(args.seed, "seed", int)
    su = setup(args)
    engines = fleet(args, args.engines)
    args.rate, args.seed = rate, seed
    reqs = workload(args, rate, seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(TABLE_HEAD)
    print("|---|---|---|---|---|---|---|---|---|")
    for policy in su.policies:
        s = run_one(args, su, reqs, engines, policy, seed)
        (out / f"sim-{policy}.json").write_text(json.dumps(s, indent=1) + "\n")
        print(table_row(policy, s))
    print(f"summaries: {out}/sim-<policy>.json")
    return 0


def numbers(text: str, name: str, kind: type) -> list[Any]:
    """``--name``'s comma-separated values as ``kind`` (finite, rates above 0, seeds from 0);
    a ConfigError for any other."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        what = "an integer" if kind is int else "a number"
        try:
            v = kind(part)
        except ValueError:
            raise ConfigError(f"--{name}: {part!r} is not {what}") from None
        low = name == "rate"  # rates above 0, seeds from 0
        if not math.isfinite(v) or (v <= 0 if low else v < 0):
            raise ConfigError(
                f"--{name}: {part!r} must be finite and {'above' if low else 'at least'} 0"
            )
        out.append(v)
    return out


def single(text: str, name: str, kind: type) -> Any:
    """The one value of ``--name`` (a list needs ``--sweep``)."""
    got = numbers(text, name, kind)
    if len(got) != 1:
        raise ConfigError(f"--{name}: {text!r} is a list; a list needs --sweep")
    return got[0]
