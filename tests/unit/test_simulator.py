"""The fleet simulator: seeded and deterministic, exact against closed forms where the engine
model has one, every request finished, arrival processes with the rates and spread asked
for, policies the live pool's, and the CLI's output and errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest, arrivals
from llmlib.model.engine import EngineProfile, load_profiles
from llmlib.model.simulator import EngineSpec, simulate

MS = 1_000_000
FIXED = EngineProfile(name="fixed", kind="fixed", ttft_ns=20 * MS, tpot_ns=5 * MS)
BATCH = EngineProfile(
    name="b",
    kind="batching",
    max_batch_size=8,
    max_num_tokens=1024,
    step_base_ns=2 * MS,
    step_per_seq_ns=100_000,
    prefill_per_token_ns=10_000,
)


def test_same_inputs_same_results_and_the_seed_matters():
    a = arrivals(2000, 300.0, "poisson", seed=3)
    assert a == arrivals(2000, 300.0, "poisson", seed=3)
    assert a != arrivals(2000, 300.0, "poisson", seed=4)
    r1 = simulate(a, [EngineSpec(BATCH, 4)], "power_of_two", seed=1)
    r2 = simulate(a, [EngineSpec(BATCH, 4)], "power_of_two", seed=1)
    r3 = simulate(a, [EngineSpec(BATCH, 4)], "power_of_two", seed=2)
    for col in ("engine", "first_ns", "final_ns"):
        assert np.array_equal(getattr(r1, col), getattr(r2, col))
    assert not np.array_equal(r1.engine, r3.engine)


def test_fixed_engines_give_exactly_their_ttft_and_tpot():
    reqs = arrivals(500, 1000.0, "bursty", seed=0, output_len=16)
    res = simulate(reqs, [EngineSpec(FIXED, 3)], "round_robin")
    arr = np.array([r.arrival_ns for r in reqs])
    outs = np.array([r.output_len for r in reqs])
    assert np.array_equal(res.first_ns - arr, np.full(len(reqs), 20 * MS))
    assert np.array_equal(res.final_ns - res.first_ns, (outs - 1) * 5 * MS)
    assert np.bincount(res.engine).tolist() in ([167, 167, 166],)  # round robin, in turn
    s = res.summary(ttft_limit_ms=20, tpot_limit_ms=5)
    assert s["ttft_ms"]["p99"] == pytest.approx(20.0) and s["goodput_rps"] == s["throughput_rps"]
    assert res.summary(ttft_limit_ms=19.9)["goodput_rps"] == 0.0


def test_a_lone_request_on_a_batching_engine_takes_the_model_s_steps():
    req = SimRequest(arrival_ns=5 * MS, prompt_len=300, output_len=10)
    res = simulate([req], [EngineSpec(BATCH)], "least_pending")
    prefill = 2 * MS + 300 * 10_000  # one step: base + its prompt's tokens
    decode = 2 * MS + 100_000  # each later step: base + one decoding sequence
    assert res.first_ns[0] == 5 * MS + prefill
    assert res.final_ns[0] == res.first_ns[0] + 9 * decode


def test_every_request_finishes_and_queues_grow_with_load():
    p95 = []
    for rate in (100.0, 400.0, 800.0):
        reqs = arrivals(3000, rate, "poisson", seed=7, prompt_len=256, output_len=64)
        res = simulate(reqs, [EngineSpec(BATCH, 2, 1.5)], "least_pending")
        assert (res.final_ns >= res.first_ns).all() and (res.first_ns > 0).all()
        s = res.summary(ttft_limit_ms=500, tpot_limit_ms=50)
        assert sum(s["per_engine"]["requests"]) == 3000
        assert s["price_per_hour"] == 3.0
        assert s["goodput_per_dollar"] == pytest.approx(s["goodput_rps"] * 3600 / 3.0)
        p95.append(s["ttft_ms"]["p95"])
    assert p95[0] < p95[1] < p95[2]


def test_arrival_processes_have_the_rate_and_spread_asked_for():
    for process, cv in (("poisson", 1.0), ("bursty", 3.0)):
        reqs = arrivals(40_000, 250.0, process, seed=11, burst_cv=3.0)
        gaps = np.diff([0] + [r.arrival_ns for r in reqs]) / 1e9
        assert gaps.mean() == pytest.approx(1 / 250.0, rel=0.05)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)
    lens = [r.prompt_len for r in arrivals(20_000, 1.0, seed=1, prompt_len=400)]
    assert np.median(lens) == pytest.approx(400, rel=0.05)
    assert {r.output_len for r in arrivals(50, 1.0, length_sigma=0, output_len=77)} == {77}
    with pytest.raises(ConfigError, match="poisson or bursty"):
        arrivals(10, 1.0, "weekly")
    with pytest.raises(ConfigError, match="rate above 0"):
        arrivals(10, 0.0)


def test_policies_spread_a_burst_as_the_live_pool_would():
    burst = [SimRequest(0, 64, 1000) for _ in range(12)]  # all at once, long outputs
    for policy in ("round_robin", "least_pending"):
        res = simulate(burst, [EngineSpec(BATCH, 3)], policy)
        assert np.bincount(res.engine).tolist() == [4, 4, 4]
    res = simulate(burst, [EngineSpec(BATCH, 3)], "least_pending")
    assert res.engine.tolist()[:3] == [0, 1, 2]  # fewest pending, lowest index on a tie
    with pytest.raises(ConfigError, match="no engines"):
        simulate(burst, [], "round_robin")
    zero = load_profiles("configs/engine_profiles.yaml")["zero"]
    with pytest.raises(ConfigError, match="nothing to simulate"):
        simulate(burst, [EngineSpec(zero)], "round_robin")


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness", "simulate", *args], capture_output=True, text=True
    )


def test_simulate_cli_writes_a_summary_per_policy_and_reports_bad_input(tmp_path):
    p = run_cli(
        "--engines=cpu-tiny:2:0.5,h100-llama2-70b:1:4",
        "--requests=400",
        "--rate=50",
        "--policy=round_robin,least_pending",
        f"--out={tmp_path}",
    )
    assert p.returncode == 0, p.stderr
    assert "| round_robin |" in p.stdout and "| least_pending |" in p.stdout
    s = json.loads((tmp_path / "sim-least_pending.json").read_text())
    assert s["requests"] == 400 and s["price_per_hour"] == 5.0
    assert len(s["per_engine"]["names"]) == 3 and s["queue_depth"]["over_time"]
    assert set(s["ttft_ms"]) == {"p50", "p95", "p99"} and s["workload"]["rate"] == 50.0
    p = run_cli(
        "--arrival=chat",
        "--prefix_cache_blocks=2000",
        "--requests=300",
        "--rate=20",
        "--policy=round_robin,cache_aware",
        f"--out={tmp_path}",
    )
    assert p.returncode == 0, p.stderr
    rr = json.loads((tmp_path / "sim-round_robin.json").read_text())
    ca = json.loads((tmp_path / "sim-cache_aware.json").read_text())
    assert ca["prefix_hit_rate"] > rr["prefix_hit_rate"] > 0
    assert ca["workload"]["arrival"] == "chat" and ca["workload"]["prefix_cache_blocks"] == 2000
    for bad, msg in (
        ("--engines=cpu-tiny:x", "count must be an integer"),
        ("--engines=cpu-tny:2", "cpu-tiny"),
        ("--policy=fastest", "round_robin"),
        ("--engines=cpu-tiny:0", "count at least 1"),
    ):
        p = run_cli(bad, "--requests=10", f"--out={tmp_path}")
        assert p.returncode == 2 and msg in p.stderr, (bad, p.stderr)


def test_a_live_dummy_run_replays_in_the_simulator(tmp_path):
    live = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--benchmarks=tiny",
            "--scenarios=server",
            "--core_type=dummy",
            "--num_cores=2",
            "--engine_profile=h100-llama2-70b-interactive",
            "--server_target_qps=20",
            "--min_duration=2000",
            "--min_query_count=40",
            "--warmup_queries=0",
            "--progress=false",
            f"--log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
    )
    assert live.returncode == 0, live.stderr[-2000:]
    run_dir = next((tmp_path / "logs").rglob("requests.csv")).parent
    p = run_cli(f"--replay={run_dir}")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["policy"] == "least_pending" and r["engines"] == 2 and r["requests"] >= 40
    assert r["profile"] == "h100-llama2-70b-interactive"
    # the engine model dominates this TTFT (tens of ms): live and simulated agree closely,
    # most closely with the live run's own placement (the engine model alone)
    assert 0.7 < r["p95_live_over_sim"] < 1.5, r
    assert 0.8 < r["p95_live_over_sim_live_placement"] < 1.25, r
    assert 0.0 <= r["placement_agreement"] <= 1.0 and len(r["jitter"]["sim_p95_ms"]) == 6
    p = run_cli(f"--replay={tmp_path}")
    assert p.returncode == 2 and "not a run directory" in p.stderr


def test_disaggregated_pools_prefill_then_move_the_kv_cache_then_decode():
    from llmlib.serving.kv_transfer import KVTransfer

    reqs = [SimRequest(i * 100 * MS, 1000, 11) for i in range(5)] + [SimRequest(600 * MS, 1000, 1)]
    kv = KVTransfer(base_ns=3 * MS, per_token_ns=2000)  # 2 ms for 1000 tokens, then 3 ms
    res = simulate(
        reqs, [EngineSpec(FIXED, 1)], "round_robin",
        decode_engines=[EngineSpec(FIXED, 2)], kv_transfer=kv,
    )  # fmt: skip
    arr = np.array([r.arrival_ns for r in reqs])
    assert list(res.first_ns - arr) == [20 * MS] * 6  # the prefill engine's TTFT
    # 10 more tokens at 5 ms each, after the 5 ms transfer
    assert list((res.final_ns - arr)[:5]) == [(20 + 5 + 50) * MS] * 5
    assert res.final_ns[5] == res.first_ns[5]  # one token: done at prefill, never decoded
    assert list(res.decode_engine) == [1, 1, 1, 1, 1, -1]  # least_pending: all idle, lowest
    s = res.summary()
    assert s["pools"] == {"prefill": 1, "decode": 2}
    assert s["per_engine"]["requests"] == [6, 5, 0]
    assert s["decode_policy"] == "least_pending" and s["migrations"] is None
    # the link: two prompts prefilled at once queue for it, one after the other
    two = [SimRequest(0, 1000, 3), SimRequest(0, 1000, 3)]
    res = simulate(
        two, [EngineSpec(FIXED, 1)], decode_engines=[EngineSpec(FIXED, 2)], kv_transfer=kv
    )
    assert sorted(res.final_ns - res.first_ns) == [(5 + 10) * MS, (7 + 10) * MS]
    with pytest.raises(ConfigError, match="negative"):
        KVTransfer(-1, 0)


def test_disaggregation_keeps_decode_steps_free_of_prefill():
    """A long prompt arriving during another's decode: shared, the decode steps carry its
    prefill chunk; disaggregated they do not (TPOT stays the decode step's)."""
    reqs = [SimRequest(0, 16, 50), SimRequest(20 * MS, 1024, 2)]
    shared = simulate(reqs, [EngineSpec(BATCH, 1)])
    pd = simulate(reqs, [EngineSpec(BATCH, 1)], decode_engines=[EngineSpec(BATCH, 1)])
    tpot = lambda r: (r.final_ns[0] - r.first_ns[0]) / 49  # noqa: E731
    # one sequence decoding, 2 ms + 0.1 ms a step (one step with the other's last token)
    assert 2.1 * MS <= tpot(pd) <= 2.11 * MS
    assert tpot(shared) > tpot(pd) + 0.1 * MS  # 1024 prefill tokens (10 ms) in one step


def test_telemetry_policy_in_the_simulator_reads_the_engines_answers(monkeypatch):
    import dataclasses

    from llmlib.model.arrivals import chat_arrivals
    from llmlib.serving.policies import TelemetryPolicy

    slow = dataclasses.replace(
        BATCH, name="slow", step_base_ns=10 * MS, prefill_per_token_ns=30_000
    )
    fleet = [EngineSpec(BATCH, 2), EngineSpec(slow, 2)]
    reqs = chat_arrivals(3000, 40.0, seed=1, systems=2, system_len=256, think_s=2.0)
    res = simulate(reqs, fleet, "telemetry")
    s = res.summary()
    assert s["migrations"] == s["policy_stats"]["migrations"] > 0
    assert s["policy_stats"]["cache_routed"] > 0
    again = simulate(reqs, fleet, "telemetry")
    assert np.array_equal(res.engine, again.engine)  # deterministic
    # the same policy with no answers observed (every core's pace 1): it sends the slow
    # engines more, and the tail is worse
    monkeypatch.setattr(TelemetryPolicy, "uses_telemetry", False)
    blind = simulate(reqs, fleet, "telemetry").summary()
    fast = lambda x: sum(x["per_engine"]["requests"][:2])  # noqa: E731
    assert fast(s) > fast(blind)
    assert s["ttft_ms"]["p95"] < blind["ttft_ms"]["p95"]


def test_a_live_disaggregated_run_through_loadgen_replays_in_the_simulator(tmp_path):
    live = subprocess.run(
        [
            sys.executable, "-m", "harness", "--benchmarks=tiny", "--scenarios=server",
            "--core_type=dummy", "--pd_flags=prefill:1,decode:2",
            "--engine_profile=h100-llama2-70b-interactive", "--server_target_qps=20",
            "--traffic_distribution_policy=telemetry", "--policy_flags=ttft_target_ms:500",
            "--decode_policy=telemetry", "--decode_policy_flags=tpot_target_ms:50",
            "--kv_transfer=base_us:500,per_token_ns:2000", "--min_duration=2000",
            "--min_query_count=40", "--warmup_queries=4", "--progress=false",
            f"--log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert live.returncode == 0, live.stderr[-2000:]
    run_dir = next((tmp_path / "logs").rglob("requests.csv")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    h = summary["harness"]  # (a run this short is INVALID to LoadGen: early stopping)
    assert h["failed"] == 0 and h["completed"] == h["issued"] >= 40
    assert summary["pools"] == {"prefill": 1, "decode": 2}
    assert summary["handed_over"] == summary["harness"]["issued"]  # every answer > 1 token
    assert summary["kv_transfer"] == {"base_ns": 500_000, "per_token_ns": 2000}
    assert "migrations" in summary["policy_stats"]
    assert any("disaggregated: prefill cores 0-0" in n for n in summary["notes"])
    from harness.report.scorecard import load_runs

    # the scorecard weighs each pool on its own: the lone prefill core is not "busiest"
    (card,) = load_runs(run_dir)
    assert card["imbalance"] < 1.5 and card["failed"] == 0
    p = run_cli(f"--replay={run_dir}")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["pools"] == {"prefill": 1, "decode": 2} and r["placement_agreement"] is None
    assert 0.7 < r["p95_live_over_sim"] < 1.5, r


def test_simulate_takes_a_benchmarks_lengths_and_limits(tmp_path):
    out = tmp_path / "sim"
    p = run_cli("--benchmark=gpt-oss-120b-interactive", "--engines=h200-gpt-oss-120b-interactive:2",
                "--rate=2", "--requests=400", "--policy=least_pending", f"--out={out}")  # fmt: skip
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "sim-least_pending.json").read_text())
    w = s["workload"]
    assert w["benchmark"] == "gpt-oss-120b-interactive"
    assert (w["ttft_limit_ms"], w["tpot_limit_ms"]) == (2000.0, 15.0)  # mlperf.conf's
    assert 1150 < w["output_len"] < 1400  # the median of gpt-oss's answers, not 128
    p = run_cli("--benchmark=deepseek-r1", "--tpot_limit_ms=50", "--requests=50",
                "--engines=h200x8-deepseek-r1", f"--out={out}")  # fmt: skip
    assert p.returncode == 0, p.stderr
    w = json.loads((out / "sim-least_pending.json").read_text())["workload"]
    assert w["tpot_limit_ms"] == 50.0 and w["ttft_limit_ms"] == 2000.0
    assert w["output_len"] > 1000  # reasoning decodes
    p = run_cli("--benchmark=deepseek-r1", "--arrival=chat", f"--out={out}")
    assert p.returncode == 2 and "--benchmark draws independent requests" in p.stderr
    p = run_cli("--benchmark=deepsek-r1", f"--out={out}")
    assert p.returncode == 2 and "Did you mean 'deepseek-r1'" in p.stderr


def test_predicted_work_in_the_simulator_forgets_what_the_engines_finish(monkeypatch):
    """The simulator tells predicted_work which requests each engine still holds (as the
    live pool does from its cores): what it keeps stays within what the engines hold, and
    long answers end up spread, one engine's long work not piled on another's."""
    from llmlib.serving import predicted as policies

    seen: list[tuple[int, int]] = []  # (requests the policy keeps, requests held) per arrival
    real = policies.PredictedWork.assign

    def assign(self, requests, loads):
        out = real(self, requests, loads)
        seen.append((sum(map(len, self.placed)), sum(loads)))
        return out

    monkeypatch.setattr(policies.PredictedWork, "assign", assign)
    reqs = arrivals(3000, 150.0, prompt_len=64, output_len=100, length_sigma=1.2, seed=3)
    res = simulate(reqs, [EngineSpec(BATCH, 4)], "predicted_work")
    s = res.summary()
    assert s["requests"] == 3000 and s["e2e_ms"]["p95"] > s["e2e_ms"]["p50"] > 0
    assert all(kept == held for kept, held in seen)  # settled every time, nothing leaked
    assert max(held for _, held in seen) < 3000  # (requests did finish between arrivals)
    assert np.array_equal(
        res.engine, simulate(reqs, [EngineSpec(BATCH, 4)], "predicted_work").engine
    )
