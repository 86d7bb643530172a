"""``python -m harness search`` against a known answer: two dummy cores of 4 sequences, 16
tokens out at 5 ms a step, so each serves 4 / 80 ms = 50 requests/s and the system 100. The
search must find the peak within one resolution step (5) of 100, from the Offline bound or
from a start point above the peak, and must not be fooled by a probe LoadGen calls VALID
while it trails its schedule. (Within a step either way: a probe's 512 Poisson arrivals,
LoadGen's default seed, come 3.5% slower than the target, so a 105 QPS probe asks ~101/s.)"""

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmlib.config.settings import REPO_ROOT

pytestmark = pytest.mark.slow

BENCH = """benchmark:
  mlperf_model: llama2-70b
  description: fixed lengths, for the capacity search's known answer
  max_new_tokens: 16
  eos_id: 2
  synthetic:
    samples: 256
    input_len: {mean: 16, sigma: 0, min: 16, max: 16}
    output_len: {mean: 16, sigma: 0, min: 16, max: 16}
settings:
  engine_profile: cpu-tiny
  vocab_size: 2048
scenarios:
  offline: {offline_expected_qps: 1000}  # (the bound run must not issue 1000/s x its length)
  server: {server_target_qps: 50}
"""
ARGS = [
    "--benchmarks=fixed16", "--progress=false", "--min_duration=3000", "--min_query_count=300",
    "--engine_flags=max_batch_size:4,step_base_us:5000,step_per_seq_us:0,prefill_per_token_us:0",
    "--search_probe_ms=3000", "--search_probe_queries=300", "--search_resolution=5",
]  # fmt: skip


def search(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path | None]:
    cfg = tmp_path / "configs"
    if not cfg.exists():
        shutil.copytree(REPO_ROOT / "configs", cfg)
        (cfg / "benchmarks" / "fixed16.yaml").write_text(BENCH)
    p = subprocess.run(
        [sys.executable, "-m", "harness", "search", f"--config_dir={cfg}",
         f"--log_dir={tmp_path / 'logs'}", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = sorted((tmp_path / "logs").rglob("search.json"))
    return p, (found[-1].parent if found else None)


def test_search_finds_the_known_peak_from_the_offline_bound(tmp_path):
    p, root = search(tmp_path, *ARGS)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((root / "search.json").read_text())
    bound = doc["probes"][0]
    assert bound["kind"] == "bound" and bound["qps"] == pytest.approx(100, rel=0.03)
    issued = json.loads((Path(bound["run_dir"]) / "summary.json").read_text())["harness"]["issued"]
    assert issued == 512  # 300 queries, in whole permutations of the 256 samples
    assert 90 <= doc["chosen_qps"] <= 105 and doc["probes"][-1]["kind"] == "confirm"
    assert doc["probes"][-1]["holds"] and doc["probes"][-1]["qps"] == doc["chosen_qps"]
    for probe in doc["probes"]:  # every run's directory kept, with LoadGen's logs
        assert (Path(probe["run_dir"]) / "mlperf_log_summary.txt").is_file()
    conf = (root / "user.conf").read_text()
    assert f"llama2-70b.Server.target_qps = {doc['chosen_qps']:g}\n" in conf
    assert (root / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| confirm |" in (root / "search.md").read_text()
    assert f"peak: {doc['chosen_qps']:g} QPS holds" in p.stdout
    assert "probes are short" not in p.stdout  # 80 ms requests in 3 s probes


def test_probes_shorter_than_a_request_s_life_are_called_out(tmp_path):
    """150 ms steps: a request lives 2.4 s, a 600-query probe at 180 QPS issues for ~3 s
    and holds. The search says its probes cannot show a backlog, and how long they should
    be, once."""
    p, root = search(
        tmp_path, "--benchmarks=fixed16", "--progress=false", "--search_max=200",
        "--engine_flags=max_batch_size:256,step_base_us:150000,step_per_seq_us:0,"
        "prefill_per_token_us:0", "--search_probe_ms=1000", "--search_probe_queries=600",
        "--search_resolution=20", "--search_confirm=false", "--search_lengthen=false",
    )  # fmt: skip
    assert p.returncode in (0, 1), p.stdout + p.stderr
    note = [x for x in p.stdout.splitlines() if x.startswith("note: probes are short")]
    assert len(note) == 1 and "--search_probe_ms of at least" in note[0], p.stdout
    probe = json.loads((root / "search.json").read_text())["probes"][0]
    assert probe["holds"] and probe["latency_p90_s"] > probe["window_s"] / 4 > 0


def test_a_probe_too_short_for_its_requests_runs_again_longer(tmp_path):
    """100 ms steps: a request lives ~1.6 s. A probe of 600 queries at 120 QPS issues for
    5 s and holds, too short to show a backlog, so 120 QPS runs again eight lifetimes long,
    and the probes after it (up to 200 QPS, above the 160 the system serves) as long."""
    p, root = search(
        tmp_path, "--benchmarks=fixed16", "--progress=false", "--search_max=200",
        "--search_start=120", "--engine_flags=max_batch_size:128,step_base_us:100000,"
        "step_per_seq_us:0,prefill_per_token_us:0", "--search_probe_ms=1000",
        "--search_probe_queries=600", "--search_resolution=40", "--search_confirm=false",
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    probes = json.loads((root / "search.json").read_text())["probes"]
    assert [x["qps"] for x in probes[:2]] == [120, 120] and len(probes) > 2, probes
    short, again, *later = probes
    assert short["holds"] and short["window_s"] < 4 * short["latency_p90_s"]
    assert again["holds"] and again["window_s"] > 4 * again["latency_p90_s"], again
    for x in later:  # as long (or stopped: broken)
        assert x["window_s"] > 4 * short["latency_p90_s"] or x["stopped_s"] > 0, x
    assert "note: probes lengthened from 1 s to" in p.stdout and "120 QPS again" in p.stdout
    assert "probes are short" not in p.stdout


def test_search_from_above_the_peak_is_not_fooled_by_a_valid_run_that_trails(tmp_path):
    """At 120 QPS the backlog grows by 20/s: TTFT stays under the 2 s limit over a short
    probe and LoadGen says VALID, but it completes ~100/s: the search calls it broken."""
    p, root = search(tmp_path, *ARGS, "--search_max=200", "--search_start=120")
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((root / "search.json").read_text())
    first = doc["probes"][0]
    assert first["kind"] == "probe" and first["qps"] == 120  # no Offline run with a max given
    assert first["validity"] == "VALID" and not first["holds"], first
    assert "under-delivered" in first["why"] and first["delivered"] < 0.95
    assert 90 <= doc["chosen_qps"] <= 105, doc


def test_probes_far_above_the_peak_stop_once_settled_invalid(tmp_path):
    """10 s probes: at 300 QPS (3x the peak) requests wait past the 2 s TTFT limit within a
    few seconds, and once more of them are late than a p99 over the probe allows, the probe
    stops (its directory says why); 150 QPS likewise, later; 75 holds and runs its length."""
    p, root = search(tmp_path, *ARGS, "--search_max=400", "--search_start=300",
                     "--search_probe_ms=10000", "--search_resolution=25",
                     "--search_confirm=false")  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    probes = json.loads((root / "search.json").read_text())["probes"]
    assert [x["qps"] for x in probes][:3] == [300, 150, 75], probes
    for x in probes[:2]:
        assert not x["holds"] and 0 < x["stopped_s"] < 8, x
        assert "stopped early" in x["why"] and "TTFT limit" in x["why"], x
        s = json.loads((Path(x["run_dir"]) / "summary.json").read_text())
        assert s["validity"] == "INVALID" and s["stopped_early"]["limit"] == "TTFT"
        assert (Path(x["run_dir"]) / "requests.csv").is_file()
    assert probes[0]["stopped_s"] < probes[1]["stopped_s"]  # further above: settled sooner
    assert probes[2]["holds"] and probes[2]["stopped_s"] == 0
    assert "breaks (stopped early" in p.stdout and " s) |" in (root / "search.md").read_text()


def test_a_run_that_holds_is_not_stopped_by_the_watch(tmp_path):
    """--stop_when_invalid on an ordinary Server run the system sustains: it runs its whole
    length and LoadGen judges it, as without the flag."""
    cfg = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", cfg)
    (cfg / "benchmarks" / "fixed16.yaml").write_text(BENCH)
    p = subprocess.run(
        [sys.executable, "-m", "harness", f"--config_dir={cfg}", f"--log_dir={tmp_path}",
         "--scenarios=Server", "--server_target_qps=50", "--stop_when_invalid=true",
         *ARGS[:4], ARGS[4]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    (summary,) = tmp_path.rglob("summary.json")
    s = json.loads(summary.read_text())
    assert s["validity"] == "VALID" and "stopped_early" not in s
    assert s["harness"]["issued"] >= 300 and s["loadgen"]["samples_per_second"] > 0


def test_a_bound_below_the_peak_is_probed_and_the_search_looks_above_it(tmp_path):
    """An upper bound that undercounts (an Offline run whose longest answers finished alone
    can): every probe below it holds, so the bound itself is probed and the search grows
    past it until a probe breaks."""
    p, root = search(tmp_path, *ARGS, "--search_max=60", "--search_resolution=10",
                     "--search_confirm=false")  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((root / "search.json").read_text())
    qps = [x["qps"] for x in doc["probes"]]
    assert 60 in qps and max(qps) > 100 and any(not x["holds"] for x in doc["probes"]), qps
    assert 80 <= doc["chosen_qps"] <= 105, qps


def test_search_keeps_one_launched_server_up_for_every_run_and_stops_it(tmp_path):
    """--launch_server: one server (llmlib's front over a fixed-latency dummy) for every
    probe, each probe pointed at it, and no server left running after."""
    p, root = search(
        tmp_path, "--benchmarks=tiny", "--core_type=openai", "--launch_server=llmlib",
        "--server_args=--engine_profile=fixed", "--progress=false", "--search_max=400",
        "--search_start=300", "--search_resolution=100", "--search_probe_ms=1000",
        "--search_confirm=false",
    )  # fmt: skip
    assert p.returncode in (0, 1), p.stdout + p.stderr  # (what this machine sustains varies)
    url = re.search(r"server: llmlib at (http://127.0.0.1:(\d+))", p.stdout)
    assert url and (root / "server.log").is_file(), p.stdout
    doc = json.loads((root / "search.json").read_text())
    assert doc["probes"] and doc["probes"][0]["qps"] == 300
    for probe in doc["probes"]:
        cfg = (Path(probe["run_dir"]) / "config.txt").read_text()
        assert url.group(1) in cfg  # each run spoke to the launched server
        assert re.search(r"stop_when_invalid +False", cfg)  # auto: not against a server
        assert probe["failed"] == 0 or not probe["holds"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.group(2))), timeout=2).close()


def test_a_backend_that_dies_in_every_probe_holds_no_qps(tmp_path):
    """The dummy engine dies after 50 requests in each run: every probe's failed requests
    break it, the search ends with no QPS, exit 1, and says why in its table."""
    p, root = search(tmp_path, *ARGS, "--dummy_fail_after=50", "--search_max=200",
                     "--search_resolution=50")  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    doc = json.loads((root / "search.json").read_text())
    assert doc["chosen_qps"] == 0 and len(doc["probes"]) >= 2
    assert all(not x["holds"] and "failed" in x["why"] for x in doc["probes"]), doc["probes"]
    assert all(x["stopped_s"] > 0 for x in doc["probes"])  # each stopped at its failures
    assert "no QPS held" in p.stdout and "requests failed" in (root / "search.md").read_text()


def test_an_interrupted_search_writes_down_the_runs_it_finished(tmp_path):
    """SIGINT during the second probe: that probe stops as any run does (its directory says
    INTERRUPTED), the search writes search.json/md with the runs before it, exits 130."""
    cfg = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", cfg)
    (cfg / "benchmarks" / "fixed16.yaml").write_text(BENCH)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "search", f"--config_dir={cfg}",
         f"--log_dir={tmp_path / 'logs'}", *ARGS, "--search_max=200", "--search_start=60"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "logs").rglob("01-*/harness.log")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    (root,) = [p.parent for p in (tmp_path / "logs").rglob("search.json")]
    doc = json.loads((root / "search.json").read_text())
    assert [p["qps"] for p in doc["probes"]] == [60] and doc["chosen_qps"] == 0
    assert "search interrupted: its 1 finished runs are in" in err
    second = json.loads(next(root.glob("01-*/summary.json")).read_text())
    assert second["validity"] == "INTERRUPTED"


def test_loadgen_s_own_search_runs_as_one_test_and_says_when_it_finds_nothing(tmp_path):
    """--search_algorithm=loadgen: LoadGen's FindPeakPerformance in one child test. From a
    start above the peak its first check fails and it finds nothing: one run, exit 1, said.
    (Its full search on this system answers 133 QPS for a 100 QPS system: BENCHMARKS.md.)"""
    p, root = search(tmp_path, *ARGS, "--search_algorithm=loadgen", "--search_start=300",
                     "--search_confirm=false", "--search_probe_queries=300")  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    doc = json.loads((root / "search.json").read_text())
    (only,) = doc["probes"]
    assert only["kind"] == "loadgen" and only["runs"] == 1 and not only["holds"]
    assert "the start 300 QPS must hold first" in only["why"]
    assert (Path(only["run_dir"]) / "mlperf_log_detail.txt").is_file()
    assert (
        "Mode     : FindPeakPerformance"
        in (Path(only["run_dir"]) / "mlperf_log_summary.txt").read_text()
    )
    assert "no QPS held (1 runs" in p.stdout and not (root / "user.conf").exists()


@pytest.mark.parametrize(
    "bad, says",
    [
        (["--search_resolution=nan"], "--search_resolution=nan: must be a finite number"),
        (["--search_probe_ms=100"], "--search_probe_ms must be at least 500"),
        (["--search_max=100", "--search_start=150"], "--search_start must be below"),
        (["--search_bogus=1"], "unknown search flag --search_bogus"),
        (["--search_max"], "--search_max needs a value"),
        (["--search_confirm=maybe"], "--search_confirm=maybe: true or false"),
        (["--search_algorithm=fast"], "--search_algorithm=fast: llmlib or loadgen"),
        (["--search_stop_early=maybe"], "--search_stop_early=maybe: auto, true or false"),
        (["--search_lengthen=1"], "--search_lengthen=1: true or false"),
        (["--search_probe_queries=2.5"], "--search_probe_queries must be a whole number"),
        (["--scenarios=offline"], "search finds a Server QPS"),
        (["--benchmarks=tiny,fixed16"], "one benchmark at a time"),
        (["--server_target_qps=inf"], "server_target_qps"),
    ],
)
def test_bad_search_input_is_one_line_and_no_run(tmp_path, bad, says):
    p, root = search(tmp_path, *ARGS, *bad)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], p.stderr
    assert root is None and not list((tmp_path / "logs").rglob("summary.json"))
