"""The scorecard: simulator summaries and run directories read alike, the checks against a
baseline (latency headroom, imbalance, errors), the verdicts, and the CLI's gate codes."""

import json
import subprocess
import sys

import pytest

from harness.report.scorecard import load_runs, score
from llmlib.model.arrivals import chat_arrivals
from llmlib.model.engine import EngineProfile
from llmlib.model.simulator import EngineSpec, simulate

MS = 1_000_000


def sim_summaries(tmp_path):
    prof = EngineProfile(
        name="cached",
        max_batch_size=16,
        max_num_tokens=2048,
        step_base_ns=5 * MS,
        step_per_seq_ns=100_000,
        prefill_per_token_ns=40_000,
        prefix_cache_blocks=4000,
    )
    reqs = chat_arrivals(2000, 12.0, seed=2, system_len=512, think_s=3.0)
    paths = []
    for policy in ("round_robin", "kv_aware"):
        s = simulate(reqs, [EngineSpec(prof, 4, 2.0)], policy).summary(2000, 200)
        path = tmp_path / f"sim-{policy}.json"
        path.write_text(json.dumps(s))
        paths.append(path)
    return paths


def live_dir(tmp_path, name, ttft_p95_ms, issued=(100, 100), failed=0):
    d = tmp_path / name / "2026.01.01-00.00.00" / "sys" / "tiny" / "server" / "performance"
    d.mkdir(parents=True)
    summary = {
        "policy": "least_pending",
        "scenario": "server",
        "harness": {
            "issued": sum(issued),
            "failed": failed,
            "ttft_ns": {"p95": ttft_p95_ms * 1e6},
            "tpot_ns": {"p95": 40e6},
            "per_core": {str(k): {"issued": n} for k, n in enumerate(issued)},
        },
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return tmp_path / name


def test_a_prefix_aware_policy_ships_against_round_robin_in_the_simulator(tmp_path):
    rr, kv = (load_runs(p)[0] for p in sim_summaries(tmp_path))
    rows = score([rr, kv])
    assert rows[0]["baseline"] and rows[0]["verdict"] == "SHIP"
    assert rows[1]["ttft_p95_headroom"] > 0.2 and rows[1]["verdict"] == "SHIP"
    assert rows[1]["goodput_per_dollar"] > 0
    back = score([kv, rr])  # against kv_aware, round_robin regresses
    assert back[1]["verdict"] == "NO-SHIP" and not back[1]["checks"]["ttft"]


def test_each_check_can_fail_on_its_own(tmp_path):
    base = load_runs(live_dir(tmp_path, "base", 100.0))[0]
    slower = load_runs(live_dir(tmp_path, "slower", 104.0))[0]  # within 5%
    much = load_runs(live_dir(tmp_path, "much", 106.0))[0]
    skewed = load_runs(live_dir(tmp_path, "skewed", 90.0, issued=(170, 30)))[0]
    broken = load_runs(live_dir(tmp_path, "broken", 90.0, failed=1))[0]
    rows = score([base, slower, much, skewed, broken])
    verdicts = {r["name"].split("(")[-1].rstrip(")"): r for r in rows}
    assert verdicts["slower"]["verdict"] == "SHIP"
    assert verdicts["much"]["checks"] == {
        "ttft": False,
        "tpot": True,
        "imbalance": True,
        "errors": True,
    }
    assert verdicts["skewed"]["imbalance"] == pytest.approx(1.7)
    assert not verdicts["skewed"]["checks"]["imbalance"]
    assert not verdicts["broken"]["checks"]["errors"] and verdicts["broken"]["error_rate"] == 0.005
    assert score([base, broken], max_error_rate=0.01)[1]["verdict"] == "SHIP"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness", "scorecard", *args], capture_output=True, text=True
    )


def test_scorecard_cli_gates_and_reports_bad_input(tmp_path):
    rr, kv = sim_summaries(tmp_path)
    p = run_cli(str(rr), str(kv), f"--out={tmp_path / 'sc'}")
    assert p.returncode == 0, p.stderr
    assert "| kv_aware" in p.stdout and "SHIP" in p.stdout
    rows = json.loads((tmp_path / "sc" / "scorecard.json").read_text())
    assert [r["verdict"] for r in rows] == ["SHIP", "SHIP"]
    p = run_cli(str(rr), str(kv), "--baseline=kv_aware", f"--out={tmp_path / 'sc2'}")
    assert p.returncode == 1 and "NO-SHIP (ttft" in p.stdout
    p = run_cli(str(rr), "--baseline=nothing", f"--out={tmp_path / 'sc3'}")
    assert p.returncode == 2 and "no such run" in p.stderr
    p = run_cli(str(tmp_path / "missing"))
    assert p.returncode == 2 and "no such run directory" in p.stderr
    (tmp_path / "other.json").write_text('{"a": 1}')
    p = run_cli(str(tmp_path / "other.json"))
    assert p.returncode == 2 and "not a simulator summary" in p.stderr
