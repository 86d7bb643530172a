"""MLPerf's run rules for LLM performance runs, against LoadGen's own mlperf.conf."""

import os
import subprocess
import sys

import pytest

from llmlib.config.settings import REPO_ROOT
from llmlib.errors import MissingDependencyError
from llmlib.eval import rules
from llmlib.eval.rules import check_llm_run, official_settings


@pytest.fixture(scope="module")
def llama2_server():
    return official_settings("llama2-70b", "Server")


def test_official_settings_come_from_loadgens_mlperf_conf(llama2_server):
    o = llama2_server
    assert o["use_token_latencies"] is True
    assert o["min_duration_ms"] == 600_000
    assert o["performance_sample_count_override"] == 24576
    assert (o["ttft_latency"], o["tpot_latency"]) == (2_000_000_000, 200_000_000)


def good_detail():
    return {
        "requested_use_token_latencies": True,
        "effective_min_duration_ms": 600_000,
        "effective_min_query_count": 24576,
        "effective_performance_sample_count": 24576,
        "requested_server_ttft_latency": 2_000_000_000,
        "requested_server_tpot_latency": 200_000_000,
        "result_perf_constraints_met": True,
        "result_min_duration_met": True,
        "result_min_queries_met": True,
        "result_validity": "VALID",
    }


def test_a_conforming_run_has_no_problems(llama2_server):
    assert check_llm_run(good_detail(), llama2_server, "server") == []


@pytest.mark.parametrize(
    "change,expect",
    [
        ({"requested_use_token_latencies": False}, "token latencies are off"),
        ({"effective_min_duration_ms": 60_000}, "min_duration 60000 ms is below"),
        ({"effective_performance_sample_count": 256}, "performance sample count 256"),
        ({"requested_server_ttft_latency": 3_000_000_000}, "TTFT limit 3000 ms is looser"),
        ({"requested_server_tpot_latency": 250_000_000}, "TPOT limit 250 ms is looser"),
        ({"result_perf_constraints_met": False}, "latency constraints not met"),
        ({"result_min_duration_met": False}, "minimum duration not met"),
        ({"result_validity": "INVALID"}, "LoadGen result INVALID"),
    ],
)
def test_each_rule_can_fail(llama2_server, change, expect):
    problems = check_llm_run(good_detail() | change, llama2_server, "server")
    assert len(problems) == 1 and expect in problems[0]


def test_latency_limits_are_not_checked_offline(llama2_server):
    d = good_detail() | {"requested_server_ttft_latency": 9_000_000_000}
    assert check_llm_run(d, llama2_server, "offline") == []


def old_loadgen(root, version="5.0.18"):
    """A folder that, first on PYTHONPATH, makes a process see an old LoadGen: its dist-info
    says `version`, and its TestSettings lacks the v6.0 round's accuracy_sample_count_override
    (what 5.0.18 really lacks)."""
    info = root / f"mlcommons_loadgen-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: mlcommons-loadgen\nVersion: {version}\n"
    )
    (root / "mlperf_loadgen.py").write_text(
        "class TestSettings:\n"
        "    def FromConfig(self, *a):\n"
        "        return 0\n"
        "    def __getattr__(self, name):\n"
        "        if name == 'accuracy_sample_count_override':\n"
        "            raise AttributeError(name)\n"
        "        return 1\n"
    )
    return root


@pytest.mark.parametrize(
    "version,ok",
    [
        ("6.0.17", True),
        ("6.1", True),
        ("7.0.0rc1", True),
        ("5.0.18", False),
        ("5.1.2", False),
        ("4.1.30", False),
    ],  # fmt: skip
)
def test_check_loadgen_wants_the_v6_round(monkeypatch, version, ok):
    monkeypatch.setattr(rules.metadata, "version", lambda name: version)
    if ok:
        assert rules.check_loadgen() == version
    else:
        with pytest.raises(MissingDependencyError, match=f"mlcommons-loadgen {version} is inst"):
            rules.check_loadgen()


def test_check_loadgen_without_loadgen(monkeypatch):
    def missing(name):
        raise rules.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(rules.metadata, "version", missing)
    with pytest.raises(MissingDependencyError, match="LoadGen is not installed"):
        rules.check_loadgen()


def test_a_loadgen_that_cannot_say_its_settings_is_one_line(tmp_path, monkeypatch):
    # the failure of session 26's first GPU call: a traceback from inside the first test
    monkeypatch.setenv("PYTHONPATH", str(old_loadgen(tmp_path)))
    rules.official_settings.cache_clear()
    try:
        with pytest.raises(MissingDependencyError) as err:
            rules.official_settings("llama3_1-8b", "Server")
    finally:
        rules.official_settings.cache_clear()
    msg = str(err.value)
    assert "\n" not in msg and "llama3_1-8b Server" in msg
    assert "accuracy_sample_count_override" in msg and "mlcommons-loadgen>=6.0" in msg


def test_an_old_loadgen_stops_the_harness_before_any_test(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{old_loadgen(tmp_path / 'lg')}:{REPO_ROOT}"}
    logs = tmp_path / "logs"
    p = subprocess.run(
        [sys.executable, "-m", "harness", f"--log_dir={logs}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: mlcommons-loadgen 5.0.18 is installed; llmlib needs >= 6.0 (the v6.0 round's "
        "benchmarks and settings): pip install 'mlcommons-loadgen>=6.0' (or the carried cp312 "
        "wheel of 6.0.x)"
    ]
    assert not logs.exists()
