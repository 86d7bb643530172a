"""MLPerf's run rules for LLM performance runs, against LoadGen's own mlperf.conf."""

import pytest

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
