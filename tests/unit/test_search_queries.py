"""A probe that broke only because LoadGen's early stopping wanted more queries is not
broken: it runs again with the queries LoadGen asked for (session 27: three interactive
probes on the H100 met their TTFT and TPOT limits by far, were judged broken on 57-114
queries, and the search walked down to 0.5 QPS)."""

import subprocess
import sys

from harness.report.report import EARLY_STOPPING, early_stopping_more
from harness.run import search
from harness.run.search import Probe, bisect
from llmlib.eval.rules import fewest_passing_queries

SUMMARY = """TPOT Early Stopping Result:
 * Run unsuccessful.
 * Processed 50 queries.
 * Would need to run at least 409 more queries,
 with the run being successful if every additional
 query were under latency.
"""


def test_loadgen_s_request_for_more_queries_is_read_from_either_log():
    detail = {"early_stopping_ttft_result": " * Would need to run at least 12 more queries,",
              "early_stopping_tpot_result": "", "result_validity": "INVALID"}  # fmt: skip
    assert early_stopping_more(detail) == 12
    assert early_stopping_more({}, SUMMARY) == 409
    assert early_stopping_more(detail, SUMMARY) == 409  # the most asked for
    assert early_stopping_more({"early_stopping_result": " * Run successful."}) == 0


def test_the_fewest_passing_queries_at_a_percentile():
    assert fewest_passing_queries(0.99) == 459  # 50 + LoadGen's 409 above
    assert fewest_passing_queries(0.90) == 44


def fake_probes(monkeypatch, peak: float, fewest: int = 459, never: bool = False):
    """run_probe for a system that holds up to ``peak`` QPS, judged INVALID by early
    stopping alone on fewer than ``fewest`` queries (``never``: on any number, 100 more
    wanted); the calls as (qps, min_queries)."""
    calls: list[tuple[float, int]] = []

    def run_probe(flags, cfg, kind, qps, run_dir, probe_ms, min_queries=600, stop=False):
        calls.append((qps, min_queries))
        ok = qps <= peak
        short = ok and (never or min_queries < fewest)
        why = EARLY_STOPPING if short else ("" if ok else "performance constraints not met")
        return Probe(kind, qps, ok and not short, "VALID" if why == "" else "INVALID", 0, qps,
                     1.0, 100.0, 10.0, 1.0, str(run_dir), why, issued=min_queries,
                     more_queries=(100 if never else fewest - min_queries) if short else 0,
                     )  # fmt: skip

    monkeypatch.setattr(search, "run_probe", run_probe)
    return calls


OWN = {"search_resolution": "10", "search_probe_ms": "1000", "search_max": "100",
       "search_start": "40", "search_stop_early": "false", "search_lengthen": "true"}  # fmt: skip


def test_a_probe_short_of_early_stopping_s_queries_runs_again_with_them(monkeypatch, tmp_path,
                                                                        capsys):  # fmt: skip
    calls = fake_probes(monkeypatch, peak=65)
    own = {**OWN, "search_probe_queries": "100"}
    probes, peak = bisect({}, None, own, tmp_path, lambda p: None)
    assert peak == 60
    # 40 QPS on 100 queries: undecided; again on 1.1 x (100 + 359) = 505, and so on after
    assert calls[:2] == [(40, 100), (40, 505)] and all(n == 505 for _, n in calls[1:])
    assert [p.holds for p in probes[:2]] == [False, True]
    assert "probes issue at least 505 queries from now on" in capsys.readouterr().out


def test_a_probe_that_never_satisfies_early_stopping_counts_as_broken(monkeypatch, tmp_path):
    """LoadGen's count assumes every added query is in time: a probe that still wants more
    after two runs again is taken as broken, and the search goes on."""
    calls = fake_probes(monkeypatch, peak=65, never=True)
    own = {**OWN, "search_probe_queries": "100"}
    probes, peak = bisect({}, None, own, tmp_path, lambda p: None)
    # 1.1 x (100 + 100) = 220, 1.1 x (220 + 100) = 352; then 40 counts as broken
    assert calls[:3] == [(40, 100), (40, 220), (40, 352)]
    assert calls[3][0] < 40 and peak == 0  # then below it, where the same happens


def test_a_probe_broken_on_its_limits_is_not_run_again(monkeypatch, tmp_path):
    calls = fake_probes(monkeypatch, peak=30)
    own = {**OWN, "search_probe_queries": "600"}
    _, peak = bisect({}, None, own, tmp_path, lambda p: None)
    assert calls[0] == (40, 600) and calls[1][0] < 40 and peak == 30


def test_loadgen_itself_asks_for_the_fewest_passing_queries(tmp_path):
    """A real Server run of 50 queries on the dummy core: LoadGen asks for 409 more, so
    50 + 409 is the count fewest_passing_queries gives for a p99."""
    p = subprocess.run(
        [sys.executable, "-m", "harness", "--benchmarks=tiny", "--scenarios=server",
         "--server_target_qps=50", "--min_query_count=50", "--sample_count=50",
         "--min_duration=500", "--progress=false", "--plots=false",
         f"--log_dir={tmp_path}"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    import json

    s = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert EARLY_STOPPING in s["reasons"]
    assert s["harness"]["issued"] + s["loadgen"]["early_stopping_more_queries"] == 459


def test_the_search_says_up_front_when_its_probes_are_too_short_to_pass(capsys):
    from harness.run.search import search_plan

    search_plan(["--benchmarks=tiny", "--search_probe_queries=100"])
    out = capsys.readouterr().out
    assert "--search_probe_queries=100 is below 459, the fewest with which LoadGen's" in out
    search_plan(["--benchmarks=tiny", "--search_probe_queries=459"])
    search_plan(["--benchmarks=tiny", "--search_probe_queries=100", "--search_algorithm=loadgen"])
    assert capsys.readouterr().out == ""  # (LoadGen's own search is judged by LoadGen alone)
