"""``python -m harness bench-client``: streams recorded from the real serving front, then
parsed in process as the endpoint client parses them. What it reports must be what the
client got: the ids or text of every recorded stream, every event counted."""

import json
from pathlib import Path

import pytest

from harness.bench.client_cost import main, parse_client, parse_floor, per_char

pytestmark = pytest.mark.slow


def test_the_bench_records_parses_and_reports(tmp_path, tiny_tokenizer):
    tok_dir = tiny_tokenizer if tiny_tokenizer.is_dir() else tiny_tokenizer.parent
    assert main(["--requests=3", "--max_tokens=16", "--repeats=1", f"--out={tmp_path}",
                 f"--tokenizer_path={tok_dir}", "--live", "--live_requests=6",
                 "--live_concurrency=1,2", "--live_rounds=1"]) == 0  # fmt: skip
    got = json.loads((tmp_path / "client_cost.json").read_text())
    rows = {r["kind"]: r for r in got["rows"]}
    assert set(rows) == {"completions, token ids", "chat, text", "chat, one character an event"}
    for r in rows.values():
        assert r["requests"] == 3 and r["events"] >= 3 * 16 and r["client_us"] > 0
    # one event a token (16, and the final event with no token), and more than one a
    # character once split
    assert rows["completions, token ids"]["events"] == 3 * 17
    assert rows["chat, one character an event"]["events"] > rows["chat, text"]["events"]
    # live: each client in a process of its own against the replay server, timed over
    # exactly its requests (the server wrote 17 events and [DONE] for each)
    live = {(r["client"], r["concurrency"]): r for r in got["live"]}
    assert ("llmlib", 1) in live and ("llmlib", 2) in live
    for r in live.values():
        assert r["runs"] == 1 and r["events"] == [6 * 18], r
        assert r["client_us_per_event"][0] > 0 and r["server_us_per_event"][0] > 0


def test_the_harness_runs_against_the_replay_server_per_flag_set(tmp_path, tiny_tokenizer, capsys):
    tok_dir = tiny_tokenizer if tiny_tokenizer.is_dir() else tiny_tokenizer.parent
    common = ["--requests=4", "--max_tokens=16", "--repeats=1", f"--tokenizer_path={tok_dir}",
              "--capacity_rounds=1", "--capacity_ms=500", "--capacity_qps=50",
              "--replay_processes=2"]  # fmt: skip
    sets = "--min_query_count=60;--min_query_count=60 --workers_per_core=2"
    assert main([*common, f"--out={tmp_path / 'ok'}", f"--capacity={sets}"]) == 0
    cap = json.loads((tmp_path / "ok" / "client_cost.json").read_text())["capacity"]
    assert [r["flags"] for r in cap] == sets.split(";")
    for r in cap:  # every request LoadGen issued came back, each a stream of the replay's
        ((done, failed),) = r["completed_failed"]
        assert done >= 60 and failed == 0, r
        assert r["tokens_per_s"][0] > 0 and r["server_us_per_event"][0] > 0
    # a flag set the harness refuses: one line, exit 2, the replay server stopped
    assert main([*common, f"--out={tmp_path / 'bad'}", "--capacity=--workers_per_core=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: bench-client --capacity: the run with --workers_per_core=x "
                              "failed: "), err  # fmt: skip


def test_the_replay_server_and_the_harness_runs_keep_to_their_cpus(tmp_path, tiny_tokenizer):
    """--replay_cpus and --client_cpus: on a machine with cores to spare, the server on
    cores of its own, so the client's figure is the client's. Each run's harness, and every
    process it starts, stays on --client_cpus."""
    import os
    import subprocess
    import sys

    from harness.bench.client_cost import cpu_list
    from harness.bench.replay import ReplayServer, pinned

    last = max(os.sched_getaffinity(0))
    assert cpu_list(f"0,{last}") == {0, last} and cpu_list("") == set()
    server = ReplayServer([[b"data: [DONE]"]], tmp_path, processes=2, cpus={last})
    try:
        for p in server.procs:
            status = Path(f"/proc/{p.pid}/status").read_text()
            assert f"Cpus_allowed_list:\t{last}\n" in status, status
    finally:
        server.stop()
    # what a pinned harness run starts (its worker processes) is pinned too
    child = (
        "import os, subprocess, sys; print(subprocess.run([sys.executable, '-c', "
        "'import os; print(sorted(os.sched_getaffinity(0)))'], capture_output=True, "
        "text=True).stdout.strip())"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         preexec_fn=pinned({0}), timeout=60).stdout  # fmt: skip
    assert out.strip() == "[0]"

    tok_dir = tiny_tokenizer if tiny_tokenizer.is_dir() else tiny_tokenizer.parent
    assert main(["--requests=2", "--max_tokens=8", "--repeats=1", f"--tokenizer_path={tok_dir}",
                 "--capacity_rounds=1", "--capacity_ms=300", "--capacity_qps=50",
                 f"--replay_cpus={last}", "--client_cpus=0", f"--out={tmp_path / 'o'}",
                 "--capacity=--min_query_count=20"]) == 0  # fmt: skip
    got = json.loads((tmp_path / "o" / "client_cost.json").read_text())
    assert got["args"]["replay_cpus"] == [last] and got["args"]["client_cpus"] == [0]
    ((done, failed),) = got["capacity"][0]["completed_failed"]
    assert done >= 20 and failed == 0


def test_replay_processes_share_one_port_and_their_counters_add_up(tmp_path):
    import urllib.request

    from harness.bench.replay import ReplayServer

    streams = [[b'data: {"choices": [{"text": "a", "token_ids": [3]}]}', b"data: [DONE]"]]
    server = ReplayServer(streams, tmp_path, processes=2)
    try:
        assert len(server.procs) == 2 and len(set(server.own)) == 2
        for _ in range(20):  # a connection each: the kernel spreads them over the two
            req = urllib.request.Request(server.url + "/v1/completions", b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                assert b"[DONE]" in r.read()
        got = server.stats()
        assert (got["requests"], got["events"]) == (20, 40)
    finally:
        server.stop()
    assert all(p.poll() is not None for p in server.procs)


def test_splitting_a_chat_stream_into_characters_keeps_its_text():
    def event(text):
        obj = {"choices": [{"index": 0, "delta": {"content": text}}]}
        return b"data: " + json.dumps(obj).encode()

    lines = [event("Hello"), event(" wo"), event("r"), event(""), b"data: [DONE]"]
    split = per_char(lines)
    assert parse_floor(split) == 5 + 3 + 1 + 1  # each character an event, the empty kept
    assert parse_client(split) == parse_client(lines) == len("Hello wor")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--requests=0"], "must be at least 1"),
        (["--repeats=-1"], "must be at least 1"),
        (["--requests=nan"], "invalid int value"),
        (["--tokenizer_path=/nonexistent"], "no tokenizer.json in /nonexistent"),
        (["--live_concurrency=1,x"], "--live_concurrency=1,x: a comma list"),
        (["--live_concurrency=0"], "a comma list of whole numbers >= 1"),
        (["--live_rounds=0"], "must be at least 1"),
        (["--capacity", "--workers_per_core=1"], "goes after '=': --flag=VALUE"),
        (["--replay_cpus=x"], "--replay_cpus=x: 'x' is not a CPU or a range of CPUs"),
        (["--client_cpus=3-1"], "'3-1' is not a CPU or a range of CPUs"),
        (["--client_cpus=,"], "--client_cpus=,: no CPU in it"),
        (["--replay_cpus=0,4096"], "CPU 4096 is not one this process may run on"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, says):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "harness", "bench-client", *args],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_replay_server_that_does_not_start_is_one_error_and_nothing_left(tmp_path, monkeypatch):
    import shutil

    from harness.bench import replay

    monkeypatch.setattr(replay.sys, "executable", shutil.which("false"))  # exits at once
    started = []

    class Seen(replay.subprocess.Popen):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            started.append(self)

    monkeypatch.setattr(replay.subprocess, "Popen", Seen)
    with pytest.raises(RuntimeError, match="the replay server did not start: ''"):
        replay.ReplayServer([[b"data: [DONE]"]], tmp_path, processes=2)
    assert len(started) == 1 and started[0].poll() is not None  # no second one, none left
    assert started[0].stdout.closed
