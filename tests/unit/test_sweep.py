"""``harness simulate --sweep`` in this process: the grid, its outputs, a failing run, and
bad input refused before any run (exit 2). Ray's backend: tests/integration/test_sweep_ray.py."""

import csv
import json
import subprocess
import sys

import pytest

import harness.tools.sweep as sweep_mod
from harness.tools.simulate import main

GRID = [
    "--sweep",
    "--sweep_backend=process",
    "--engines=cpu-tiny:4:0.5;cpu-tiny:2:0.5",
    "--policy=round_robin,least_pending",
    "--rate=40,80",
    "--seed=0,1",
    "--requests=300",
]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness", "simulate", *args], capture_output=True, text=True
    )


def test_a_sweep_runs_every_point_once_and_merges_them(tmp_path):
    assert main([*GRID, f"--out={tmp_path}"]) == 0
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["points"] == 16 and doc["failed"] == 0 and doc["backend"] == "process"
    keys = [(r["fleet"], r["policy"], r["rate"], r["seed"]) for r in doc["runs"]]
    assert len(set(keys)) == 16
    assert {k[0] for k in keys} == {"cpu-tiny:4:0.5", "cpu-tiny:2:0.5"}
    rows = list(csv.DictReader((tmp_path / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 16 and all(r["error"] == "" for r in rows)
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    by = {k: r["summary"] for k, r in zip(keys, doc["runs"], strict=True)}
    # each point is the plain command's run with those values
    one = by[("cpu-tiny:2:0.5", "least_pending", 80.0, 1)]
    assert one["workload"]["rate"] == 80.0 and one["workload"]["seed"] == 1
    assert one["workload"]["engines"] == "cpu-tiny:2:0.5" and one["requests"] == 300
    plain = tmp_path / "plain"
    assert main(["--engines=cpu-tiny:2:0.5", "--policy=least_pending", "--rate=80", "--seed=1",
                 "--requests=300", f"--out={plain}"]) == 0  # fmt: skip
    alone = json.loads((plain / "sim-least_pending.json").read_text())
    assert {k: v for k, v in alone.items() if k != "simulated_in_s"} == {
        k: v for k, v in one.items() if k != "simulated_in_s"
    }
    # the seed and the rate change the workload; the same point twice does not
    assert by[("cpu-tiny:2:0.5", "least_pending", 80.0, 0)]["ttft_ms"] != one["ttft_ms"]
    assert by[("cpu-tiny:2:0.5", "least_pending", 40.0, 1)]["ttft_ms"] != one["ttft_ms"]


def test_a_run_that_fails_is_reported_and_the_others_kept(tmp_path, monkeypatch, capsys):
    real = sweep_mod.run_point

    def flaky(args, point):
        if point.rate == 80.0 and point.seed == 1:
            raise RuntimeError("injected at 80/s")
        return real(args, point)

    monkeypatch.setattr(sweep_mod, "run_point", flaky)
    assert main([*GRID, f"--out={tmp_path}"]) == 1
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["failed"] == 4  # 2 fleets x 2 policies at that rate and seed
    bad = [r for r in doc["runs"] if "error" in r]
    assert all(r["error"] == "RuntimeError: injected at 80/s" for r in bad) and len(bad) == 4
    assert sum("summary" in r for r in doc["runs"]) == 12
    out = capsys.readouterr()
    assert out.out.count("failed: RuntimeError") == 4 and "4 of 16 runs failed" in out.err


@pytest.mark.parametrize(
    "bad, msg",
    [
        (["--rate=100,200"], "a list needs --sweep"),
        (["--seed=0,1"], "a list needs --sweep"),
        (["--sweep", "--rate=nan"], "--rate: 'nan' must be finite and above 0"),
        (["--sweep", "--rate=50,inf"], "'inf' must be finite"),
        (["--sweep", "--rate=0"], "above 0"),
        (["--sweep", "--rate=fast"], "--rate: 'fast' is not a number"),
        (["--sweep", "--seed=-1"], "at least 0"),
        (["--sweep", "--seed=1.5"], "is not an integer"),
        (["--sweep", "--engines=cpu-tiny:2;cpu-tny:2"], "cpu-tiny"),
        (["--sweep", "--engines=;"], "at least one fleet"),
        (["--sweep", "--policy=round_robin,fastest"], "round_robin"),
        (["--sweep", "--ray_address=nohostport"], "not host:port"),
    ],
)
def test_bad_sweeps_are_refused_before_any_run(tmp_path, bad, msg):
    p = run_cli(*bad, "--requests=10", f"--out={tmp_path}")
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "sweep.json").exists()


def test_without_ray_the_ray_backend_says_what_to_install(tmp_path, monkeypatch):
    from llmlib.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    with pytest.raises(ConfigError, match=r"needs Ray: pip install -e '\.\[ray\]'"):
        main(["--sweep", "--requests=10", f"--out={tmp_path}"])
    with pytest.raises(ConfigError, match="not host:port"):  # bad input first, Ray or not
        main(["--sweep", "--ray_address=nohostport", "--requests=10", f"--out={tmp_path}"])
    assert not (tmp_path / "sweep.json").exists()
