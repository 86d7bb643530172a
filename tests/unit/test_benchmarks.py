"""The benchmark YAMLs against LoadGen's own mlperf.conf and the README's table."""

import re

import numpy as np
import pytest
import yaml

from harness.run.driver import planned_runs
from harness.tools.benchmarks import table
from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
from llmlib.eval.rules import official_settings
from llmlib.model.engine import get_profile, load_profiles
from tests.conftest import make_cfg

V6 = {  # benchmark -> (LoadGen model, Server TTFT ms, TPOT ms, samples, compliance)
    "llama3.1-8b": ("llama3_1-8b", 2000, 100, 13368, ("TEST06",)),
    "llama3.1-8b-interactive": ("llama3_1-8b-interactive", 500, 30, 13368, ("TEST06",)),
    "llama3.1-8b-edge": ("llama3_1-8b-edge", None, None, 5000, ()),
    "deepseek-r1": ("deepseek-r1", 2000, 80, 4388, ("TEST06",)),
    "deepseek-r1-interactive": ("deepseek-r1-interactive", 1500, 15, 4388, ("TEST06",)),
    "gpt-oss-120b": ("gpt-oss-120b", 3000, 80, 6396, ("TEST07", "TEST09")),
    "gpt-oss-120b-interactive": ("gpt-oss-120b-interactive", 2000, 15, 6396, ("TEST07", "TEST09")),
    "llama3.1-405b-interactive": ("llama3_1-405b-interactive", 4500, 80, 8313, ("TEST06",)),
}


@pytest.mark.parametrize("name", sorted(V6))
def test_v6_benchmark_maps_to_loadgen_and_its_limits(name):
    model, ttft, tpot, samples, comp = V6[name]
    spec = load_benchmark(REPO_ROOT / "configs", name)
    assert spec.mlperf_model == model and spec.compliance == comp
    server = official_settings(model, "Server")
    assert server["use_token_latencies"] is True  # LoadGen knows the model as an LLM
    if ttft is not None:
        assert (server["ttft_latency"], server["tpot_latency"]) == (ttft * 10**6, tpot * 10**6)
    assert spec.synthetic_samples() == samples  # from mlperf.conf, not the YAML
    assert spec.shape_source and spec.bos_id is not None and spec.eos_id > spec.bos_id >= 0
    # its default engine profile exists: a batching engine shaped for this benchmark
    settings = yaml.safe_load((REPO_ROOT / "configs/benchmarks" / f"{name}.yaml").read_text())
    prof = get_profile(load_profiles(REPO_ROOT / "configs/engine_profiles.yaml"),
                       settings["settings"]["engine_profile"])  # fmt: skip
    assert not prof.is_zero and settings["settings"]["vocab_size"] > spec.eos_id


def test_synthetic_shapes_match_the_references_they_cite():
    def mean_out(name):
        ds = SyntheticDataset(load_benchmark(REPO_ROOT / "configs", name), 1, 1000)
        return float(np.mean([ds.output_len(i) for i in range(len(ds))]))

    assert mean_out("deepseek-r1") == pytest.approx(3886.2274, rel=0.03)
    assert mean_out("gpt-oss-120b") == pytest.approx(1278.20, rel=0.02)
    assert mean_out("llama3.1-8b") <= 128


def test_readme_benchmark_table_is_the_generated_one():
    readme = (REPO_ROOT / "README.md").read_text()
    m = re.search(r"<!-- benchmarks: .*? -->\n(.*?)\n<!-- end benchmarks -->", readme, re.S)
    assert m and m.group(1) == table()


@pytest.mark.parametrize(
    ("bench", "tests"),
    [("deepseek-r1", ["TEST06"]), ("gpt-oss-120b", ["TEST07", "TEST09"]),
     ("llama3.1-8b-edge", [])],
)  # fmt: skip
def test_submission_run_runs_the_compliance_tests_its_benchmark_requires(tmp_path, bench, tests):
    cfg = make_cfg(bench, "offline", test_mode="SubmissionRun")
    runs = planned_runs(cfg, tmp_path)
    assert [t for _, t, _ in runs if t] == tests
    assert [m for m, t, _ in runs if not t] == ["PerformanceOnly", "AccuracyOnly"]


def test_gpt_oss_accuracy_runs_have_their_own_output_cap():
    spec = load_benchmark(REPO_ROOT / "configs", "gpt-oss-120b")
    assert spec.for_mode("PerformanceOnly").max_new_tokens == 10240
    assert spec.for_mode("PerformanceOnly", "TEST07").max_new_tokens == 10240
    assert spec.for_mode("AccuracyOnly").max_new_tokens == 32768
    ds = load_benchmark(REPO_ROOT / "configs", "deepseek-r1")
    assert ds.for_mode("AccuracyOnly").max_new_tokens == 20000
