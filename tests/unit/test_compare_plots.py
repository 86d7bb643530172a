"""`harness compare` and the per-run plots, on hand-made run directories."""

import json

import numpy as np
import pytest

from harness.report.compare import compare, main, table
from harness.report.plots import plot_run, read_requests
from llmlib.errors import ConfigError
from llmlib.serving.request import LLMRequest, LLMResponse, failed_response
from llmlib.serving.request_log import RequestLog

PNG = b"\x89PNG\r\n\x1a\n"


def summary(scenario="server", tps=1000.0, validity="VALID", ttft_p99=5e6, **kw):
    s = {
        "benchmark": "tiny",
        "scenario": scenario,
        "mode": "performance",
        "core_type": "dummy",
        "num_cores": 2,
        "validity": validity,
        "loadgen": {
            "samples_per_second": tps / 30,
            "tokens_per_second": tps,
            "ttft_ns": {"p50": 2e6, "p99": ttft_p99},
            "tpot_ns": {"p50": 1e6, "p99": 2e6},
            "ttft_limit_ns": 2e9,
            "tpot_limit_ns": 2e8,
        },
        "harness": {"failed": 0},
    }
    s.update(kw)
    return s


def run_dir(root, name, s):
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_compare_table_ratios_within_a_kind(tmp_path):
    a = run_dir(tmp_path, "a/server", summary(tps=1000))
    run_dir(tmp_path, "b/server", summary(tps=500, validity="INVALID", ttft_p99=9e6))
    run_dir(tmp_path, "b/offline", summary("offline", tps=8000))
    rows = compare([str(a), str(tmp_path / "b")])
    assert [r["label"] for r in rows] == ["a/server", "b/offline", "b/server"]
    md = table(rows)
    lines = md.splitlines()
    assert "| 1 | a/server |" in lines[2] and "1.00x" in lines[2]
    assert "b/offline" in lines[3] and "1.00x" in lines[3]  # first of its kind
    assert "0.50x" in lines[4] and "INVALID" in lines[4] and "| 9.00 |" in lines[4]
    assert lines[4].endswith("| 0 | - | - |")  # a run from before delivery was reported


def test_compare_shows_delivery_and_goodput_of_server_runs(tmp_path):
    short = {"ratio": 0.88, "under_delivered": True, "scheduled_qps": 120.0}
    run_dir(tmp_path, "a", summary(delivery=short, goodput={"share": 0.995}))
    run_dir(tmp_path, "b", summary(delivery={"ratio": 0.999, "under_delivered": False}))
    rows = compare([str(tmp_path)])
    lines = table(rows).splitlines()
    assert "| delivered | goodput |" in lines[0]
    assert "| VALID UNDER-DELIVERED |" in lines[2] and lines[2].endswith("| 88.0% | 99.5% |")
    assert "UNDER-DELIVERED" not in lines[3] and lines[3].endswith("| 99.9% | - |")


def test_compare_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        compare([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no summary.json below it"):
        compare([str(tmp_path / "empty")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        compare([str(bad)])


def test_compare_main_writes_plot_and_json(tmp_path, capsys):
    a = run_dir(tmp_path, "x", summary(tps=1000))
    b = run_dir(tmp_path, "y", summary(tps=1500))
    out, js = tmp_path / "c.png", tmp_path / "c.json"
    assert main([str(a), str(b), f"--plot={out}", f"--json={js}"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert [r["label"] for r in json.loads(js.read_text())] == ["x", "y"]
    assert "1.50x" in capsys.readouterr().out


def write_requests(d, streamed):
    log = RequestLog()
    toks = np.arange(3, 13, dtype=np.uint32)
    reqs = [LLMRequest(q, q, toks, 16, streamed, None, None, q * 10_000_000) for q in range(60)]
    log.on_issue(reqs)
    out = []
    for r in reqs[:-1]:
        if streamed:
            out.append(LLMResponse(r.request_id, toks[:1], False, r.issue_ns + 3_000_000))
        out.append(LLMResponse(r.request_id, toks, True, r.issue_ns + 30_000_000, 1))
    out.append(failed_response(59, "boom", reqs[-1].issue_ns + 1, 0))
    log.on_responses(out)
    log.write_csv(d / "requests.csv", 0)


@pytest.mark.parametrize("scenario,streamed", [("server", True), ("offline", False)])
def test_plot_run_draws_latency_cdf_and_throughput(tmp_path, scenario, streamed):
    write_requests(tmp_path, streamed)
    d = read_requests(tmp_path / "requests.csv")
    assert d["ok"].sum() == 59 and np.isfinite(d["ttft_ms"]).sum() == (59 if streamed else 0)
    files = plot_run(tmp_path, summary(scenario))
    assert files == ["latency_cdf.png", "throughput.png"]
    for f in files:
        assert (tmp_path / f).read_bytes()[:8] == PNG


def _png_height(path):
    return int.from_bytes(path.read_bytes()[20:24], "big")


def test_throughput_plot_gets_the_gpu_panel_where_the_run_has_gpu_samples(tmp_path):
    write_requests(tmp_path, True)
    plot_run(tmp_path, summary())
    alone = _png_height(tmp_path / "throughput.png")
    rows = [f"{t * 0.5},{g},{50 + g},5,{70000 + t},1980,500" for t in range(8) for g in (0, 1)]
    (tmp_path / "gpu.csv").write_text(
        "t_s,gpu,util_pct,mem_util_pct,mem_used_mib,c,p\n" + "\n".join(rows) + "\n"
    )
    plot_run(tmp_path, summary())
    assert _png_height(tmp_path / "throughput.png") > 1.5 * alone  # a second panel
    for bad in ("t_s,gpu\n", "t_s,gpu,util\nnot,numbers,here,at,all\n"):
        (tmp_path / "gpu.csv").write_text(bad)
        assert plot_run(tmp_path, summary()) == ["latency_cdf.png", "throughput.png"]
        assert _png_height(tmp_path / "throughput.png") == alone


def test_no_requests_csv_no_plots(tmp_path):
    assert plot_run(tmp_path, summary()) == []
