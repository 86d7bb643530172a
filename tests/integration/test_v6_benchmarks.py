"""The v6.0 round's LLM benchmarks through real LoadGen on the dummy core: each one VALID in
Offline and Server (and SingleStream for -edge), on its synthetic workload and on a small file
in its published format; gpt-oss-120b's SubmissionRun with TEST07 and TEST09, which pass and
fail where they should."""

import json

import numpy as np
import pandas as pd
import pytest

from llmlib.data.benchmarks import load_benchmark
from llmlib.data.tokenizer import load_tokenizer
from llmlib.eval.rules import official_settings
from tests.conftest import run_harness

pytestmark = pytest.mark.slow

V6 = [
    "llama3.1-8b",
    "llama3.1-8b-interactive",
    "llama3.1-8b-edge",
    "deepseek-r1",
    "deepseek-r1-interactive",
    "gpt-oss-120b",
    "gpt-oss-120b-interactive",
    "llama3.1-405b-interactive",
]
# every request takes 150 ms: an Offline run lasts past a 100 ms minimum whatever its lengths
OFFLINE = ["--scenarios=offline", "--min_duration=100", "--engine_profile=fixed",
           "--engine_flags=ttft_ms:150,tpot_ms:0.001", "--offline_expected_qps=100"]  # fmt: skip
SERVER = ["--server_target_qps=250", "--engine_profile=fixed",
          "--engine_flags=ttft_ms:2,tpot_ms:0.02"]  # fmt: skip


def all_runs(tmp_path):
    """Every run's summary under tmp_path (run_harness keys by scenario and mode only)."""
    return [json.loads(f.read_text()) for f in sorted((tmp_path / "logs").rglob("summary.json"))]


def check_valid(summaries):
    for s in summaries:
        assert s["validity"] == "VALID", (s["benchmark"], s["scenario"], s["reasons"])
        assert s["harness"]["failed"] == 0


def test_each_v6_benchmark_is_valid_on_its_synthetic_workload(tmp_path):
    benches = f"--benchmarks={','.join(V6)}"
    p, _ = run_harness(tmp_path, benches, *OFFLINE, "--sample_count=300", timeout=600)
    assert p.returncode == 0, p.stderr
    p, _ = run_harness(tmp_path, benches, "--scenarios=server", *SERVER, "--sample_count=300",
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    p, _ = run_harness(tmp_path, "--benchmarks=llama3.1-8b-edge", "--scenarios=singlestream",
                       *SERVER, "--sample_count=300")  # fmt: skip
    assert p.returncode == 0, p.stderr
    runs = all_runs(tmp_path)
    check_valid(runs)
    by_bench: dict[str, set[str]] = {}
    for s in runs:
        by_bench.setdefault(s["benchmark"], set()).add(s["scenario"])
        assert s["mlperf_model"] == load_benchmark("configs", s["benchmark"]).mlperf_model
    assert all(by_bench[b] >= {"offline", "server"} for b in V6)
    assert "singlestream" in by_bench["llama3.1-8b-edge"]
    # the Server run was held to the benchmark's own limits from mlperf.conf
    ds = next(s for s in runs if s["benchmark"] == "deepseek-r1-interactive"
              and s["scenario"] == "server")  # fmt: skip
    assert (
        ds["loadgen"]["ttft_limit_ns"]
        == official_settings("deepseek-r1-interactive", "Server")["ttft_latency"]
    )


def write_v6_files(tmp_path, tok):
    rng = np.random.default_rng(7)

    def prompt(k):
        return rng.integers(3, 500, 20 + k).tolist()

    cnn = tmp_path / "cnn_eval.json"
    cnn.write_text(json.dumps([{"input": f"article {k}", "tok_input": prompt(k),
                                "output": f"summary {k}"} for k in range(12)]))  # fmt: skip
    ds = tmp_path / "mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl"
    pd.DataFrame(
        {
            "text_input": [f"question {k}" for k in range(12)],
            "tok_input": [prompt(k) for k in range(12)],
            "ground_truth": ["A"] * 12,
            "dataset": ["gpqa", "aime", "math500", "mmlu_pro"] * 3,
            "question": [f"question {k}" for k in range(12)],
        }
    ).to_pickle(ds)
    go = tmp_path / "perf_eval_ref.parquet"
    pd.DataFrame(
        {
            "input_tokens": [np.array(prompt(k)) for k in range(12)],
            "dataset": ["aime25", "gpqa_diamond", "livecodebench_v6"] * 4,
            "ground_truth": ["7"] * 12,
        }
    ).to_parquet(go)
    big = tmp_path / "mlperf_llama3.1_405b_dataset_8313_processed_fp16_eval.pkl"
    pd.DataFrame(
        {
            "tok_input": [prompt(k) for k in range(12)],
            "gt_output": ["x"] * 12,
            "metric": ["rouge"] * 12,
        }  # fmt: skip
    ).to_pickle(big)
    return {"llama3.1-8b": cnn, "deepseek-r1": ds, "gpt-oss-120b": go, "llama3.1-405b": big}


def test_each_v6_benchmark_is_valid_on_a_file_in_its_published_format(tmp_path, tiny_tokenizer):
    files = write_v6_files(tmp_path, load_tokenizer(tiny_tokenizer))
    for family, path in files.items():
        benches = [b for b in V6 if load_benchmark("configs", b).family == family]
        where = tmp_path / family
        for scen in (OFFLINE, ["--scenarios=server", *SERVER]):
            p, _ = run_harness(where, f"--benchmarks={','.join(benches)}", *scen,
                               f"--dataset_path={path}", timeout=600)  # fmt: skip
            assert p.returncode == 0, p.stderr
        runs = all_runs(where)
        assert len(runs) == 2 * len(benches)
        check_valid(runs)
        for s in runs:
            assert s["dataset"] == f"mlperf:{family}" and s["samples"] == 12


def harmony(draft, final):
    return (
        f"<|channel|>analysis<|message|>{draft}<|end|><|start|>assistant"
        f"<|channel|>final<|message|>{final}<|return|>"
    )


def gpqa_file(path, tok, right, n=10, length=0):
    """A gpt-oss-style GPQA table whose reference outputs (what the dummy core answers) are
    right for the first ``right`` rows; with ``length``, each is padded to that many tokens
    after harmony's ``<|return|>`` (which the scorer ignores)."""
    filler = tok.encode("\n", add_bos=False)[0]
    rows = []
    for k in range(n):
        out = tok.encode(harmony("A looks likely", "B" if k < right else "C"), add_bos=False)
        out += [filler] * max(0, length - len(out))
        rows.append(
            {
                "tok_input": tok.encode(f"Question {k}: A, B, C or D?"),
                "dataset": "gpqa_diamond",
                "ground_truth": "B",
                "tok_ref_output": out,
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_gpt_oss_submission_runs_test07_and_test09_as_its_benchmark_requires(
    tmp_path, tiny_tokenizer
):
    tok = load_tokenizer(tiny_tokenizer)
    perf = gpqa_file(tmp_path / "perf_eval_ref.parquet", tok, 10, length=1278)
    acc = gpqa_file(tmp_path / "acc_eval_inputs.parquet", tok, 10)  # all right
    t07 = gpqa_file(tmp_path / "acc_eval_compliance_gpqa.parquet", tok, 7)  # 70% >= 60.698
    p, runs = run_harness(
        tmp_path, "--benchmarks=gpt-oss-120b", "--scenarios=offline", "--test_mode=SubmissionRun",
        *OFFLINE[1:], f"--dataset_path={perf}", f"--accuracy_dataset_path={acc}",
        f"--test07_dataset_path={t07}", f"--tokenizer_path={tiny_tokenizer}",
    )  # fmt: skip
    # a 100 ms run is no submission: the run rules make it exit 1, nothing else does
    assert p.returncode == 1 and "error (MLPerf run rules)" in p.stderr
    assert "error (accuracy)" not in p.stderr and "error (compliance)" not in p.stderr, p.stderr
    assert set(runs) == {("offline", m) for m in ("performance", "accuracy", "TEST07", "TEST09")}
    acc_dir = runs[("offline", "accuracy")][1]
    scored = json.loads((acc_dir / "accuracy.json").read_text())
    assert scored["scores"]["exact_match"] == 100.0 and scored["verdict"] == "PASS"
    c07, d07 = runs[("offline", "TEST07")]
    assert c07["compliance"]["exact_match"] == 70.0 and c07["compliance"]["result"] == "PASS"
    assert (d07 / "verify_accuracy.txt").read_text().rstrip().endswith("TEST PASS")
    assert "TEST07" in d07.parts and "compliance" in d07.parts
    c09, d09 = runs[("offline", "TEST09")]
    assert c09["compliance"]["mean_output_tokens"] == 1278.0
    assert (d09 / "verify_output_len.txt").read_text().rstrip().endswith("TEST PASS")


def test_test07_and_test09_fail_where_they_should(tmp_path, tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    t07 = gpqa_file(tmp_path / "acc_eval_compliance_gpqa.parquet", tok, 6)  # 60% < 60.698
    p, runs = run_harness(
        tmp_path, "--benchmarks=gpt-oss-120b", "--scenarios=server", *SERVER,
        "--compliance_tests=TEST07,TEST09", f"--dataset_path={t07}",
        f"--tokenizer_path={tiny_tokenizer}",
    )  # fmt: skip
    assert p.returncode == 1
    c07, d07 = runs[("server", "TEST07")]
    assert c07["compliance"]["exact_match"] == 60.0 and c07["compliance"]["result"] == "FAIL"
    assert (d07 / "verify_accuracy.txt").read_text().rstrip().endswith("TEST FAIL")
    c09, _ = runs[("server", "TEST09")]
    assert c09["compliance"]["result"] == "FAIL"  # short answers, not ~1,278 tokens
    assert c09["compliance"]["mean_output_tokens"] < 100
    assert "error (compliance): gpt-oss-120b/server/TEST07 FAIL" in p.stderr
    assert "error (compliance): gpt-oss-120b/server/TEST09 FAIL" in p.stderr
    assert runs[("server", "performance")][0]["validity"] == "VALID"


def test_the_accuracy_sample_count_is_loadgens_and_evaluate_says_so(tmp_path, tiny_tokenizer):
    """mlperf.conf gives gpt-oss-120b accuracy_sample_count_override = 4,395 (of 6,396): an
    accuracy run issues the first N samples only. Here a user.conf sets 6 of a 10-row file."""
    tok = load_tokenizer(tiny_tokenizer)
    acc = gpqa_file(tmp_path / "acc_eval_inputs.parquet", tok, 10)
    conf = tmp_path / "user.conf"
    conf.write_text("gpt-oss-120b.*.accuracy_sample_count_override = 6\n")
    p, runs = run_harness(
        tmp_path, "--benchmarks=gpt-oss-120b", "--scenarios=offline", "--test_mode=AccuracyOnly",
        *OFFLINE[1:], f"--dataset_path={acc}", f"--tokenizer_path={tiny_tokenizer}",
        f"--user_conf={conf}",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    run_dir = runs[("offline", "accuracy")][1]
    logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in logged) == list(range(6))
    from harness.report.evaluate import evaluate_run

    out = evaluate_run(run_dir)
    assert out["samples"] == 6 and out["verdict"] == "PASS"
    assert "scored 6 of the dataset's 10 samples (LoadGen's accuracy sample count, 6" in out["note"]
