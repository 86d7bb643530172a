"""The openai core against a real OpenAI-compatible server on 127.0.0.1: llmlib's
own serving front (``python -m harness serve``), started and stopped here."""

import csv
import json
import re
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from harness.serve.process import FrontProcess
from tests.conftest import run_harness

pytestmark = pytest.mark.slow


FAST = ("--engine_profile=fixed",)  # 20 ms TTFT, 5 ms TPOT, no batch limit


class Front(FrontProcess):
    """``python -m harness serve`` on a free port (``FAST`` by default); ``url`` once it
    listens; JSON in and out."""

    def __init__(self, *args):
        super().__init__(list(args or FAST), grace_s=10)

    def post(self, path, body):
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read().decode()


@pytest.fixture
def front():
    f = Front()
    yield f
    f.stop()


def endpoint_args(url, *more):
    return [
        "--core_type=openai",
        f"--server_urls={url}",
        "--min_query_count=400",
        "--offline_expected_qps=600",
        *more,
    ]


def test_offline_and_server_through_loadgen_are_valid(tmp_path, front):
    p, runs = run_harness(tmp_path, *endpoint_args(front.url), "--server_target_qps=100")
    assert p.returncode == 0, p.stderr
    for scen in ("offline", "server"):
        s, run_dir = runs[(scen, "performance")]
        assert s["validity"] == "VALID", (scen, s["reasons"])
        assert s["harness"]["failed"] == 0 and s["harness"]["completed"] > 0
        assert any("output token ids: " in n and " server" in n for n in s["notes"])
    ttft_count = re.search(r"time_to_first_token_seconds_count\S* (\d+)", front.get("/metrics"))
    assert int(ttft_count.group(1)) >= runs[("server", "performance")][0]["harness"]["completed"]


@pytest.mark.parametrize("workers", [0, 2])
def test_loadgen_receives_the_servers_token_ids(tmp_path, front, workers):
    p, runs = run_harness(
        tmp_path,
        *endpoint_args(front.url, f"--workers_per_core={workers}"),
        "--scenarios=server",
        "--test_mode=AccuracyOnly",
    )
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("server", "accuracy")]
    assert any(f"{workers} worker processes" in n for n in s["notes"]) == (workers > 0)
    logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    from harness.run.prepare import build_dataset
    from llmlib.config.settings import resolve
    from llmlib.data.benchmarks import load_benchmark

    cfg = resolve({}, benchmark="tiny", scenario="server", env={})
    spec = load_benchmark(cfg.config_dir, "tiny")
    ds = build_dataset(cfg, spec)  # the run's own synthetic prompts
    for e in logged[:5]:
        i = e["qsl_idx"]
        want = front.post(
            "/v1/completions",
            {
                "prompt": ds.input_tokens(i).tolist(),
                "max_tokens": spec.max_new_tokens,
                "return_token_ids": True,
                "stream": False,
            },
        )["choices"][0]
        got = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32).tolist()
        assert got == want["token_ids"] and len(got) > 1


def test_chat_api_with_a_text_only_server_is_retokenized_and_keeps_test06(tmp_path, tiny_tokenizer):
    f = Front(*FAST, f"--tokenizer_path={tiny_tokenizer}", "--no_token_ids")
    try:
        p, runs = run_harness(
            tmp_path,
            *endpoint_args(f.url, "--endpoint_api=chat", f"--tokenizer_path={tiny_tokenizer}"),
            "--scenarios=server",
            "--compliance_tests=TEST06",
            "--server_target_qps=100",
            "--vocab_size=512",
        )
    finally:
        f.stop()
    assert p.returncode == 0, p.stderr
    s, _ = runs[("server", "TEST06")]
    assert s["compliance"]["result"] == "PASS" and s["compliance"]["samples"] > 0, s["compliance"]
    assert any("retokenized" in n and "/v1/chat/completions" in n for n in s["notes"])


def kill_after(front, successes, sig=signal.SIGKILL):
    """Signal the front once it has answered ``successes`` requests (read from /metrics)."""

    def watch():
        while front.proc.poll() is None:
            try:
                m = re.search(r'outcome="success"\} (\d+)', front.get("/metrics"))
            except OSError:  # stopped by the test's cleanup
                return
            if m and int(m.group(1)) >= successes:
                front.proc.send_signal(sig)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def server_run(tmp_path, urls, *more, duration_ms=6000):
    """A 100 QPS Server run against ``urls``: (process, summary, run dir, seconds taken)."""
    t0 = time.monotonic()
    p, runs = run_harness(tmp_path, *endpoint_args(urls, *more), "--scenarios=server",
                      f"--min_duration={duration_ms}", "--server_target_qps=100")  # fmt: skip
    s, run_dir = runs[("server", "performance")]
    return p, s, run_dir, time.monotonic() - t0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_server_killed_mid_run_fails_its_queries_and_the_run_ends(tmp_path, workers):
    f = Front()
    killer = kill_after(f, 150)  # warmup queries count too: well into the timed run
    try:
        more = ("--endpoint_timeout_s=5", f"--workers_per_core={workers}")
        p, s, _, took = server_run(tmp_path, f.url, *more)
    finally:
        f.stop()
        killer.join(5)
    h = s["harness"]
    assert h["failed"] > 0 and h["completed"] > 0
    assert h["completed"] + h["failed"] == h["issued"]  # every query accounted for
    assert s["validity"] == "INVALID" and took < 120
    assert "failed" in p.stdout


def test_one_of_two_servers_killed_leaves_the_rotation_and_the_other_keeps_serving(tmp_path):
    # least_pending alone would favour the dead server's core: it holds nothing pending
    alive, doomed = Front(), Front()
    killer = kill_after(doomed, 60)
    try:
        urls = f"{alive.url},{doomed.url}"
        p, s, run_dir, _ = server_run(tmp_path, urls, "--endpoint_timeout_s=5", duration_ms=5000)
    finally:
        alive.stop()
        doomed.stop()
        killer.join(5)
    h = s["harness"]
    assert h["completed"] + h["failed"] == h["issued"]
    assert 0 < h["failed"] < 100  # what the dead server held (~30 in flight here), no more
    assert h["per_core"]["0"]["completed"] > 0.75 * h["issued"]
    events = [(e["core"], e["event"]) for e in s["core_health"]]
    assert events[0] == (1, "ejected"), s["core_health"]
    assert "failures in a row" in s["core_health"][0]["reason"]
    # nothing was sent to the dead server's core after it was ejected (it rests 10 s)
    out_ms = s["core_health"][0]["t_s"] * 1000 + 1
    rows = list(csv.DictReader((run_dir / "requests.csv").read_text().splitlines()))
    assert not [r for r in rows if r["core"] == "1" and float(r["issue_ms"]) > out_ms]
    assert "Cores taken out of the rotation" in (run_dir / "report.md").read_text()
    assert s["validity"] == "INVALID"


def test_a_stopped_server_fails_what_it_holds_after_the_stall_timeout(tmp_path):
    # SIGSTOP: connections stay open and nothing comes back; only a stall watch ends it
    alive, stopped = Front(), Front()
    stopper = kill_after(stopped, 60, signal.SIGSTOP)
    try:
        p, s, _, took = server_run(tmp_path, f"{alive.url},{stopped.url}", "--stall_timeout_s=2")
    finally:
        stopper.join(5)
        stopped.proc.send_signal(signal.SIGCONT)
        alive.stop()
        stopped.stop()
    h = s["harness"]
    assert h["completed"] + h["failed"] == h["issued"]
    stall = ("for over 2 s on any open request", "stopped for over 2 s after it began")
    assert h["failed"] > 0 and 1 <= len(h["errors"]) <= 2, h["errors"]
    assert all(any(t in e for t in stall) for e in h["errors"]), h["errors"]
    assert s["core_health"][0]["core"] == 1 and s["core_health"][0]["event"] == "ejected"
    assert h["per_core"]["0"]["completed"] > 0.75 * h["issued"]
    assert took < 60  # endpoint_timeout_s is 600 s: without the stall watch, 10 minutes


def test_no_server_listening_is_a_clear_error(tmp_path):
    p, _ = run_harness(
        tmp_path,
        *endpoint_args("http://127.0.0.1:9"),
        "--scenarios=offline",
        "--readiness_timeout_s=2",
    )
    assert p.returncode != 0
    assert "http://127.0.0.1:9" in p.stderr


def test_llama_cpp_api_against_another_server_is_a_clear_error(tmp_path, front):
    p, runs = run_harness(
        tmp_path, *endpoint_args(front.url, "--endpoint_api=llamacpp"), "--scenarios=offline"
    )
    assert p.returncode != 0 and not runs
    assert "is not llama.cpp's server" in p.stderr and front.url in p.stderr, p.stderr[-2000:]


def test_missing_urls_and_a_bad_url_are_config_errors(tmp_path):
    p, _ = run_harness(tmp_path, "--core_type=openai", "--scenarios=offline")
    assert p.returncode == 2 and "--server_urls" in p.stderr
    p, _ = run_harness(tmp_path, *endpoint_args("localhost:8000"), "--scenarios=offline")
    assert p.returncode == 2 and "not an http(s) URL" in p.stderr


def disagg_yaml(path, leader, ctx, gen):
    """A trtllm-serve disaggregated YAML (host:port entries, no scheme, as its docs show)."""
    import yaml

    host, port = leader.removeprefix("http://").split(":")
    doc = {
        "hostname": host,
        "port": int(port),
        "backend": "pytorch",
        "context_servers": {"num_instances": len(ctx), "urls": [u[7:] for u in ctx]},
        "generation_servers": {"num_instances": len(gen), "urls": [u[7:] for u in gen]},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_disagg_core_reads_the_leader_and_workers_from_the_disagg_yaml(tmp_path):
    fronts = [Front() for _ in range(3)]  # our front in each role: leader, context, generation
    try:
        leader, ctx, gen = fronts
        conf = disagg_yaml(tmp_path / "disagg.yaml", leader.url, [ctx.url], [gen.url])
        p, runs = run_harness(
            tmp_path,
            "--core_type=trtllm_disagg",
            f"--disagg_config={conf}",
            "--scenarios=server",
            "--min_query_count=400",
            "--server_target_qps=100",
        )
        assert p.returncode == 0, p.stderr
        s, _ = runs[("server", "performance")]
        assert s["validity"] == "VALID" and s["harness"]["failed"] == 0
        assert any(f"leader {leader.url}, 1 context / 1 generation" in n for n in s["notes"])
        # a worker that does not answer is named before the run starts
        gen.stop()
        p, _ = run_harness(
            tmp_path / "down",
            "--core_type=trtllm_disagg",
            f"--disagg_config={conf}",
            "--scenarios=offline",
            "--readiness_timeout_s=2",
        )
        assert p.returncode != 0 and f"generation server {gen.url}" in p.stderr
    finally:
        for f in fronts:
            f.stop()


def test_disagg_config_errors_name_the_file_and_the_problem(tmp_path):
    p, _ = run_harness(tmp_path, "--core_type=trtllm_disagg", "--scenarios=offline")
    assert p.returncode == 2 and "--disagg_config" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("hostname: localhost\nport: 8000\ncontext_servers: {urls: []}\n")
    p, _ = run_harness(tmp_path, "--core_type=trtllm_disagg", f"--disagg_config={bad}")
    assert p.returncode == 2 and "context_servers.urls is missing or empty" in p.stderr


@pytest.mark.parametrize(
    ("api", "workers"), [("chat", 0), ("completions", 2)]
)  # chat: reasoning_content deltas; completions: </think> in the text
def test_a_reasoning_stream_counts_every_token_for_loadgen_and_reports_the_split(
    tmp_path, tiny_tokenizer, api, workers
):
    f = Front(*FAST, f"--tokenizer_path={tiny_tokenizer}", "--reasoning_tokens=3")
    try:
        p, runs = run_harness(
            tmp_path,
            *endpoint_args(
                f.url,
                f"--endpoint_api={api}",
                f"--tokenizer_path={tiny_tokenizer}",
                f"--workers_per_core={workers}",
            ),  # fmt: skip
            "--scenarios=server",
            "--test_mode=AccuracyOnly",
            "--server_target_qps=100",
            "--vocab_size=512",
        )
    finally:
        f.stop()
    assert p.returncode == 0, p.stderr
    s, run_dir = runs[("server", "accuracy")]
    with open(run_dir / "reasoning.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == s["harness"]["completed"] > 0
    logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    n_tokens = {e["qsl_idx"]: len(bytes.fromhex(e["data"])) // 4 for e in logged}
    for row in rows:
        r, a = int(row["reasoning_tokens"]), int(row["answer_tokens"])
        total = n_tokens[int(row["sample"])]
        assert r + a == total  # LoadGen got every generated token, reasoning included
        assert r == min(3, total)  # the front's first 3 tokens were reasoning
        assert (row["ttft_answer_ms"] == "") == (a == 0)
    rs = s["reasoning"]
    assert rs["requests"] == len(rows) and 0 < rs["reasoning_share"] < 1
    assert rs["reasoning_tokens"]["p50"] == 3 and rs["ttft_answer_ns"]["p50"] > 0
    report = (run_dir / "report.md").read_text()
    assert "Reasoning (" in report and "TTFT to first answer token" in report
