"""The serving front's batch API and its limits over real HTTP on 127.0.0.1: ``python -m
harness serve`` started here (the dummy core, or the tiny Llama in numpy), every endpoint
with good and bad input, keys, rates, admission, timeouts and draining."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from llmlib.config.settings import REPO_ROOT
from tests.integration.test_endpoint import Front

pytestmark = pytest.mark.slow


def call(front, path, body=None, key=None, raw=None, timeout=30):
    """(status, JSON body, headers) of one request; ``raw`` bytes are sent as they are."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(front.url + path, data, headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


@pytest.fixture(scope="module")
def dummy_front():
    f = Front(
        "--engine_profile=fixed",
        "--max_batch=4",
        "--max_tokens_cap=64",
        "--max_prompt_tokens=50",
        "--max_body_bytes=4000",
    )
    yield f
    f.stop()


def test_generate_answers_every_prompt_with_usage(dummy_front):
    status, out, _ = call(
        dummy_front, "/generate", {"prompts": [[1, 2, 3], [4, 5]], "max_tokens": 7}
    )
    assert status == 200, out
    assert [len(c["token_ids"]) for c in out["completions"]] == [7, 7]
    assert all(c["finish_reason"] == "length" for c in out["completions"])
    assert out["completions"][0]["text"] == "".join(
        f"<{t}>" for t in out["completions"][0]["token_ids"]
    )
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19}


def test_stop_strings_cut_text_and_tokens(dummy_front):
    _, whole, _ = call(dummy_front, "/generate", {"prompts": [[9, 9]], "max_tokens": 6})
    toks = whole["completions"][0]["token_ids"]
    stop = f"<{toks[3]}>"  # the text of the fourth token
    _, cut, _ = call(
        dummy_front, "/generate", {"prompts": [[9, 9]], "max_tokens": 6, "stop": [stop]}
    )
    c = cut["completions"][0]
    assert c["finish_reason"] == "stop" and stop not in c["text"]
    assert c["token_ids"] == toks[: toks.index(toks[3])]
    assert c["text"] == "".join(f"<{t}>" for t in c["token_ids"])


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"prompts": "not a list"}, 400, "prompts"),
        ({"prompts": []}, 400, "at least 1"),
        ({"prompts": [[1]], "max_tokens": 0}, 400, "max_tokens"),
        ({"prompts": [[1]], "max_tokens": "5"}, 400, "max_tokens"),
        ({"prompts": [[1]], "max_tokens": 65}, 400, "cap of 64"),
        ({"prompts": [[1]], "temperature": 2.5}, 400, "temperature"),
        ({"prompts": [[1]], "top_p": 0}, 400, "top_p"),
        ({"prompts": [[1]], "seed": -1}, 400, "seed"),
        ({"prompts": [[1, -2]]}, 400, "prompts.0.1"),
        ({"prompts": [[1]], "stop": [""]}, 400, "stop"),
        ({"prompts": [[1]], "nucleus": 0.9}, 400, "nucleus"),
        ({"prompts": ["text without a tokenizer"]}, 400, "tokenizer"),
        ({"prompts": [[1]] * 5}, 413, "limit of 4"),
        ({"prompts": [list(range(51))]}, 413, "limit of 50"),
    ],
)
def test_generate_refuses_bad_input_with_one_message(dummy_front, body, status, says):
    got, out, _ = call(dummy_front, "/generate", body)
    assert got == status and says in out["error"]["message"], out
    assert out["error"]["code"] == status


def test_bodies_that_are_no_json_or_too_big(dummy_front):
    for raw, says in (
        (b'{"prompts": [[1]], "temperature": NaN}', "finite"),
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
    ):
        status, out, _ = call(dummy_front, "/generate", raw=raw)
        assert status == 400 and says in out["error"]["message"], out
    status, out, _ = call(dummy_front, "/generate", raw=b'{"prompts": [["' + b"x" * 5000 + b'"]]}')
    assert status == 413 and "4000" in out["error"]["message"]
    status, out, _ = call(dummy_front, "/v1/completions", {"prompt": [1], "max_tokens": 100})
    assert status == 400 and "cap of 64" in out["error"]["message"]


def test_loglikelihood_on_a_core_that_cannot_score_names_those_that_can(dummy_front):
    status, out, _ = call(dummy_front, "/loglikelihood", {"prompts": [[1]], "continuations": [[2]]})
    assert status == 501 and "tiny_llama" in out["error"]["message"]


def test_probes_openapi_and_metrics(dummy_front):
    assert call(dummy_front, "/healthz")[0] == 200
    status, out, _ = call(dummy_front, "/readyz")
    assert status == 200 and out["status"] == "ready"
    doc = json.loads(dummy_front.get("/openapi.json"))
    assert doc["openapi"].startswith("3.1")
    assert {"/generate", "/loglikelihood", "/healthz", "/readyz"} <= set(doc["paths"])
    gen = doc["components"]["schemas"]["GenerateRequest"]["properties"]
    assert gen["temperature"]["maximum"] == 2.0 and gen["top_p"]["exclusiveMinimum"] == 0.0
    metrics = dummy_front.get("/metrics")
    assert 'llmlib:rejected_requests_total{model_name="llmlib-dummy",reason="too_large"}' in metrics
    assert "llmlib:time_per_output_token_seconds_bucket" in metrics and "_created" not in metrics


def test_api_keys_rates_and_open_probes(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# the team's key\nalpha\n\nbeta  # another\n")
    f = Front(
        "--engine_profile=fixed", f"--api_keys_file={keys}", "--rate_limit=1", "--rate_burst=2"
    )
    try:
        body = {"prompts": [[1]], "max_tokens": 2}
        status, out, headers = call(f, "/generate", body)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert call(f, "/generate", body, key="gamma")[0] == 401
        assert call(f, "/generate", body, key="alpha")[0] == 200
        assert call(f, "/v1/completions", {"prompt": [1], "max_tokens": 2}, key="alpha")[0] == 200
        status, out, headers = call(f, "/generate", body, key="alpha")  # the burst of 2 is spent
        assert status == 429 and int(headers["Retry-After"]) >= 1, out
        assert call(f, "/generate", body, key="beta")[0] == 200  # each key has its own rate
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/health"):
            assert urllib.request.urlopen(f.url + path, timeout=10).status == 200
        assert 'reason="auth"} 2.0' in f.get("/metrics")
    finally:
        f.stop()


def test_admission_is_bounded_and_timeouts_answer_504():
    # fixed profile: 20 ms to the first token, 5 ms a token after: 400 tokens take ~2 s
    f = Front("--engine_profile=fixed", "--max_in_flight=2", "--max_tokens_cap=1000")
    try:
        results = []

        def slow():
            results.append(call(f, "/generate", {"prompts": [[1]], "max_tokens": 400})[0])

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        status, out, headers = call(f, "/generate", {"prompts": [[1]], "max_tokens": 1})
        assert status == 429 and headers["Retry-After"] == "1", out
        assert time.monotonic() - t0 < 1.0  # refused at once, not queued
        for t in threads:
            t.join()
        assert results == [200, 200]
    finally:
        f.stop()
    g = Front("--engine_profile=fixed", "--request_timeout_s=0.3", "--max_tokens_cap=1000")
    try:
        status, out, _ = call(g, "/generate", {"prompts": [[1]], "max_tokens": 400})
        assert status == 504 and "0.3 s" in out["error"]["message"]
        assert call(g, "/generate", {"prompts": [[1]], "max_tokens": 2})[0] == 200
    finally:
        g.stop()


def test_sigterm_drains_what_is_in_flight_then_exits():
    f = Front("--engine_profile=fixed", "--max_tokens_cap=1000", "--drain_s=10")
    results = []
    t = threading.Thread(
        target=lambda: results.append(call(f, "/generate", {"prompts": [[1]], "max_tokens": 300}))
    )
    t.start()
    time.sleep(0.4)
    f.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = call(f, "/generate", {"prompts": [[1]], "max_tokens": 1})
    assert late[0] == 503 and "draining" in late[1]["error"]["message"]
    assert call(f, "/readyz")[0] == 503
    t.join(10)
    assert (
        results
        and results[0][0] == 200
        and len(results[0][1]["completions"][0]["token_ids"]) == 300
    )
    assert f.proc.wait(10) == 0
    f.stop()


def test_sigterm_cuts_what_outlives_the_drain_bound_and_exits():
    f = Front("--engine_profile=fixed", "--max_tokens_cap=2000", "--drain_s=0.3")
    results = []

    def slow():  # about 5 s of decoding: longer than the drain bound
        try:
            results.append(call(f, "/generate", {"prompts": [[1]], "max_tokens": 1000})[0])
        except OSError as exc:  # the connection cut when the front exits
            results.append(type(exc).__name__)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    t0 = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    assert f.proc.wait(10) == 0 and time.monotonic() - t0 < 3  # within the bound, not ~5 s
    t.join(10)
    assert results and results[0] != 200, results
    f.err.seek(0)
    assert b"still in flight after 0.3 s of draining" in f.err.read()
    f.stop()


def serve_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness", "serve", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rate_limit=nan"], "finite"),
        (["--max_in_flight=0"], "max_in_flight"),
        (["--port=70000"], "port"),
        (["--bogus=1"], "unrecognized"),
        (["--api_keys_file=/nonexistent/keys"], "no such file"),
        (["--config=/nonexistent.yaml"], "--config"),
        (["--core_type=tiny_llama", "--tiny_llama_model=/nonexistent"], "make tiny-model"),
        (["--core_type=nope"], "core type"),
        (["--", "--bogus_flag=1"], "Unknown flag '--bogus_flag'"),
        (["--", "not-a-flag"], "unexpected argument"),
    ],
)
def test_bad_settings_are_one_line_and_status_2(args, says):
    p = serve_cli(*args)
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and says in p.stderr, p.stderr


@pytest.fixture(scope="module")
def tiny_front(tiny_model):
    f = Front(
        "--core_type=tiny_llama",
        f"--tiny_llama_model={tiny_model}",
        f"--tokenizer_path={tiny_model}",
        "--model=tiny",
    )
    yield f
    f.stop()


def test_loglikelihood_is_the_model_s_own(tiny_front, tiny_model):
    from llmlib.data.tokenizer import load_tokenizer
    from llmlib.model.tiny_llama_np import TinyLlama

    model, tok = TinyLlama(tiny_model), load_tokenizer(tiny_model)
    body = {
        "prompts": ["def add(a, b):", [1, 5, 9]],
        "continuations": ["\n    return a + b", [7, 7]],
    }
    status, out, _ = call(tiny_front, "/loglikelihood", body)
    assert status == 200, out
    want = [
        model.loglikelihood(
            tok.encode("def add(a, b):"), tok.encode("\n    return a + b", add_bos=False)
        ),
        model.loglikelihood([1, 5, 9], [7, 7]),
    ]
    assert out["ll"] == pytest.approx(want, abs=1e-6) and all(x < 0 for x in out["ll"])
    for bad, says in (
        ({"prompts": ["a", "b"], "continuations": ["c"]}, "equal length"),
        ({"prompts": ["a"], "continuations": [""]}, "empty"),
        ({"prompts": [[1]], "continuations": [[5000]]}, "vocabulary"),
        ({"prompts": [[1]]}, "continuations"),
    ):
        status, out, _ = call(tiny_front, "/loglikelihood", bad)
        assert status == 400 and says in out["error"]["message"], (bad, out)


def test_generate_greedy_is_the_model_s_and_a_seed_repeats_its_sample(tiny_front, tiny_model):
    from llmlib.model.tiny_llama_np import TinyLlama

    model = TinyLlama(tiny_model)
    status, out, _ = call(tiny_front, "/generate", {"prompts": [[1, 5, 9]], "max_tokens": 10})
    assert status == 200
    want = list(model.generate([1, 5, 9], 10, model.eos_id))
    assert out["completions"][0]["token_ids"] == want
    sampled = {"prompts": [[1, 5, 9]] * 2, "max_tokens": 10, "temperature": 1.5, "seed": 11}
    a = call(tiny_front, "/generate", sampled)[1]["completions"]
    b = call(tiny_front, "/generate", sampled)[1]["completions"]
    assert a == b and a[0] == a[1]
    assert a[0]["token_ids"] == list(model.generate([1, 5, 9], 10, model.eos_id, 1.5, 1.0, 11))


def test_the_tiny_llama_core_through_loadgen_gives_the_model_s_tokens(tmp_path, tiny_model):
    from llmlib.data.benchmarks import SyntheticDataset, load_benchmark
    from llmlib.eval.accuracy import read_accuracy_log
    from llmlib.model.tiny_llama_np import TinyLlama
    from tests.conftest import run_harness

    p, runs = run_harness(
        tmp_path,
        "--core_type=tiny_llama",
        f"--tiny_llama_model={tiny_model}",
        "--scenarios=offline",
        "--test_mode=AccuracyOnly",
        "--vocab_size=2048",
        "--sample_count=12",
        "--warmup_queries=2",
        "--offline_expected_qps=10",
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    spec = load_benchmark(REPO_ROOT / "configs", "tiny")
    ds = SyntheticDataset(spec, 0, 2048, 12)
    model = TinyLlama(tiny_model)
    s, run_dir = runs[("offline", "accuracy")]
    assert s["harness"]["failed"] == 0 and s["harness"]["completed"] == 12
    got = read_accuracy_log(run_dir / "mlperf_log_accuracy.json")
    for i, tokens in got.items():
        assert tokens.tolist() == list(
            model.generate(ds.input_tokens(i), spec.max_new_tokens, model.eos_id)
        ), i


@pytest.fixture(scope="module")
def routed_front(tmp_path_factory, tiny_tokenizer):
    from tests.integration.test_routing import write_config, zero_pools

    pools = zero_pools(reasoning={"flags": {"dummy_fail_after": 0}, "fallback": "reasoning_bf16"})
    pools["reasoning_bf16"] = {
        "core_type": "dummy",
        "fallback": "general",
        "flags": {"engine_profile": "zero", "dummy_fail_after": 0},
    }
    yaml_path = write_config(tmp_path_factory.mktemp("routing") / "r.yaml", pools, threshold=0.5)
    f = Front(
        "--core_type=routing", f"--routing_config={yaml_path}", f"--tokenizer_path={tiny_tokenizer}"
    )
    yield f
    f.stop()


def test_route_experts_and_the_fallback_chain_in_headers_and_metrics(routed_front):
    from tests.integration.test_routing import PROMPTS

    status, out, _ = call(routed_front, "/route", {"prompts": PROMPTS})
    assert status == 200, out
    d = out["decisions"]
    assert d[0]["expert"] == "code" and d[0]["source"] == "gate"  # #include
    assert "reasoning" in (d[4]["expert"], d[5]["expert"])
    for one in d[1:]:
        assert one["source"] in ("mlp", "default") and len(one["top"]) == 2
        assert one["top"][0]["p"] >= one["top"][1]["p"]
        if one["source"] == "mlp":
            assert one["expert"] == one["top"][0]["expert"] and one["confidence"] >= 0.5
    short = call(routed_front, "/route", {"prompts": [PROMPTS[1]], "max_words": 1})[1]
    assert short["decisions"][0]["top"] != d[1]["top"]  # decided on one word, not all
    status, out, _ = call(routed_front, "/experts")
    pools = {e["expert"]: e for e in out["experts"]}
    assert set(pools) == {"general", "code", "reasoning", "reasoning_bf16"}
    assert pools["reasoning"]["fallback"] == "reasoning_bf16" and pools["general"]["healthy"]
    assert pools["code"]["domain"] == "code" and pools["code"]["core_type"] == "dummy"
    for i, one in enumerate(d):
        body = {"prompt": PROMPTS[i], "max_tokens": 3}
        status, _, headers = call(routed_front, "/v1/completions", body)
        assert status == 200
        if one["expert"] == "reasoning":
            assert headers["X-LLMLib-Expert"] == "general"
            assert headers["X-LLMLib-Fallback"] == "reasoning->reasoning_bf16->general"
        else:
            assert (
                headers["X-LLMLib-Expert"] == one["expert"] and "X-LLMLib-Fallback" not in headers
            )
    k = [one["expert"] for one in d].index("reasoning")  # streamed: headers at the first token
    req = urllib.request.Request(
        routed_front.url + "/v1/completions",
        json.dumps({"prompt": PROMPTS[k], "max_tokens": 3, "stream": True}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["X-LLMLib-Fallback"] == "reasoning->reasoning_bf16->general"
        assert r.read().decode().rstrip().endswith("data: [DONE]")
    metrics = routed_front.get("/metrics")
    n = sum(one["expert"] == "reasoning" for one in d) + 1
    assert (
        'llmlib:router_fallbacks_total{from_expert="reasoning",model_name="llmlib-dummy",'
        f'to_expert="reasoning_bf16"}} {float(n)}' in metrics
    ), metrics
    assert 'router_decision_seconds_count{kind="route",model_name="llmlib-dummy"} 7.0' in metrics
    served = re.search(r'router_decision_seconds_count\{kind="served"[^}]*\} (\S+)', metrics)
    assert float(served.group(1)) == len(d) + 1  # each completion's decision, and the stream's
    assert 'llmlib:routed_requests_total{expert="code",model_name="llmlib-dummy"}' in metrics


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"prompts": []}, "at least 1"),
        ({"prompts": [3]}, "prompts.0"),
        ({"prompts": ["a"], "max_words": 0}, "max_words"),
        ({"prompt": "a"}, "prompts"),
    ],
)
def test_route_refuses_bad_input(routed_front, body, says):
    status, out, _ = call(routed_front, "/route", body)
    assert status == 400 and says in out["error"]["message"], out


def test_route_and_experts_need_the_routing_core(dummy_front):
    for path, body in (("/route", {"prompts": ["x"]}), ("/experts", None)):
        status, out, _ = call(dummy_front, path, body)
        assert status == 501 and "--core_type routing" in out["error"]["message"]


def test_stream_events_token_sends_one_event_a_token():
    f = Front("--engine_profile=zero", "--stream_events=token")
    try:
        body = {"prompt": [1, 2, 3], "max_tokens": 6, "stream": True, "return_token_ids": True}
        req = urllib.request.Request(
            f.url + "/v1/completions",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("data: {")]
        chunks = [json.loads(ln[6:])["choices"][0] for ln in lines]
        with_tokens = [c for c in chunks if c["token_ids"]]
        assert [len(c["token_ids"]) for c in with_tokens] == [1] * 6
        assert chunks[-1]["finish_reason"] == "length"
    finally:
        f.stop()


def test_routing_pools_of_openai_cores_reach_their_own_servers(tmp_path, tiny_tokenizer):
    """Pools of endpoint cores behind the routing front, one pool with two servers: each
    core talks to its own URL (the routing core numbers cores across pools)."""
    from tests.integration.test_routing import PROMPTS, write_config

    servers = [
        Front("--engine_profile=zero", f"--tokenizer_path={tiny_tokenizer}") for _ in range(3)
    ]
    routed = None
    try:
        pools = {
            "general": {"core_type": "openai", "flags": {"server_urls": servers[0].url}},
            "code": {
                "core_type": "openai",
                "flags": {"server_urls": f"{servers[1].url},{servers[2].url}"},
            },
            "reasoning": {"core_type": "openai", "flags": {"server_urls": servers[0].url}},
        }
        yaml_path = write_config(tmp_path / "fleet.yaml", pools)
        routed = Front(
            "--core_type=routing",
            f"--routing_config={yaml_path}",
            f"--tokenizer_path={tiny_tokenizer}",
        )
        experts = call(routed, "/experts")[1]["experts"]
        assert {e["expert"]: e["cores"] for e in experts} == {
            "general": 1,
            "code": 2,
            "reasoning": 1,
        }
        code = [p for p in PROMPTS[:2] for _ in range(6)]  # the gate and the MLP: code
        from concurrent.futures import ThreadPoolExecutor

        def one(prompt):  # at once, so the pool's least-pending policy spreads them
            return call(routed, "/v1/completions", {"prompt": prompt, "max_tokens": 20})

        with ThreadPoolExecutor(len(code)) as ex:
            answers = list(ex.map(one, code))
        for status, _, headers in answers:
            assert status == 200 and headers["X-LLMLib-Expert"] == "code"
        served = [
            float(re.search(r'outcome="success"\} (\S+)', s.get("/metrics")).group(1))
            for s in servers
        ]
        assert served[0] == 0 and served[1] > 0 and served[2] > 0 and sum(served) == len(code)
    finally:
        for s in servers:
            s.stop()
        if routed is not None:
            routed.stop()


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/completions", {"prompt": 5}, "prompt"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": [1], "max_tokens": "5"}, "max_tokens"),
        ("/v1/completions", {"prompt": [1], "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": [1], "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": [1], "temperature": 3.0}, "temperature"),
        ("/v1/completions", {"prompt": [1], "top_p": 1.5}, "top_p"),
        ("/v1/completions", {"max_tokens": 2}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "role"),
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ],
)
def test_openai_endpoints_refuse_bad_input_with_one_message(dummy_front, path, body, says):
    status, out, _ = call(dummy_front, path, body)
    assert status == 400 and says in out["error"]["message"], out


def test_openai_endpoints_keep_fields_they_do_not_read(dummy_front):
    body = {"prompt": [1, 2], "max_tokens": 3, "model": "x", "n": 1, "user": "u", "echo": False}
    status, out, _ = call(dummy_front, "/v1/completions", body)
    assert status == 200 and out["usage"]["completion_tokens"] == 3
    status, _, _ = call(dummy_front, "/v1/completions", raw=b'{"prompt": [1], "temperature": NaN}')
    assert status == 400


def test_every_api_endpoint_needs_the_key(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    f = Front("--engine_profile=zero", f"--api_keys_file={keys}")
    try:
        for path, body in (
            ("/generate", {"prompts": [[1]]}),
            ("/loglikelihood", {"prompts": [[1]], "continuations": [[2]]}),
            ("/route", {"prompts": ["x"]}),
            ("/v1/completions", {"prompt": [1]}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
            ("/experts", None),
            ("/v1/models", None),
        ):
            status, out, headers = call(f, path, body)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", (path, out)
            assert call(f, path, body, key="k")[0] != 401, path
    finally:
        f.stop()


def test_openai_sampling_reaches_the_tiny_llama(tiny_front, tiny_model):
    from llmlib.model.tiny_llama_np import TinyLlama

    body = {
        "prompt": [1, 5, 9],
        "max_tokens": 6,
        "temperature": 1.2,
        "seed": 4,
        "return_token_ids": True,
        "ignore_eos": True,
    }
    got = call(tiny_front, "/v1/completions", body)[1]["choices"][0]["token_ids"]
    assert got == list(TinyLlama(tiny_model).generate([1, 5, 9], 6, None, 1.2, 1.0, 4))


def test_a_core_that_dies_answers_500_and_readyz_says_so():
    f = Front("--engine_profile=zero", "--dummy_fail_after=0")
    try:
        status, out, _ = call(f, "/generate", {"prompts": [[1], [2]], "max_tokens": 2})
        assert status == 500 and "2 of 2 prompts failed" in out["error"]["message"], out
        status, out, _ = call(f, "/v1/completions", {"prompt": [1], "max_tokens": 2})
        assert status == 500 and out["error"]["message"], out
        status, out, _ = call(f, "/readyz")
        assert status == 503 and "down" in out["status"]
        assert call(f, "/healthz")[0] == 200  # the process is still up
        assert 'outcome="failed"} 3.0' in f.get("/metrics")
    finally:
        f.stop()
