"""The routing core in front of real dummy expert pools: prompts decoded and routed with
the shipped router, the gate, fallback when a pool fails (and failure when none is left),
configuration errors, and a whole run through LoadGen with the routing report."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cores.routing import RoutingCore
from llmlib.config.settings import REPO_ROOT
from llmlib.data.benchmarks import RequestBuilder
from llmlib.data.token_files import load_jsonl
from llmlib.data.tokenizer import load_tokenizer
from llmlib.errors import ConfigError, UnknownNameError
from llmlib.serving.request import RequestBatch
from tests.conftest import Collector, make_cfg

ROUTER = REPO_ROOT / "configs" / "routing" / "router.npz"

PROMPTS = [
    "#include <stdio.h>\nint main(void) { return 0; }\nWhy does this not print anything?",
    "Write a python function that parses a CSV file and returns the rows as dicts",
    "What should I pack for a week-long hiking trip in the Alps in September?",
    "Write a short, warm thank-you note to my neighbour for watering my plants",
    "A train travels 120 km in 1.5 hours. What is its average speed in km per hour?",
    "Solve for x: 4x + 7 = 31. Show your steps.",
]


def write_config(path, pools, gate=True, threshold=0.0, **extra):
    lines = [
        f"router: {ROUTER}",
        "default_expert: general",
        f"confidence_threshold: {threshold}",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    if gate:
        lines += ["gate:", '  - {expert: code, keywords: ["#include"]}']
    lines.append("pools:")
    for name, spec in pools.items():
        lines.append(f"  {name}: {json.dumps(spec)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def zero_pools(**over):
    pools = {
        name: {"core_type": "dummy", "num_cores": 1, "flags": {"engine_profile": "zero"}}
        for name in ("general", "code", "reasoning")
    }
    for name, change in over.items():
        for k, v in change.items():
            if k == "flags":
                pools[name]["flags"].update(v)
            else:
                pools[name][k] = v
    return pools


@pytest.fixture
def prompts(tmp_path, tiny_tokenizer):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    return path


def run_core(tmp_path, tiny_tokenizer, prompts, pools, stream=False, batch=False, **cfg_extra):
    yaml_path = write_config(tmp_path / "routing.yaml", pools)
    cfg = make_cfg(
        core_type="routing",
        routing_config=str(yaml_path),
        tokenizer_path=str(tiny_tokenizer),
        routing_stats_file=str(tmp_path / "routing.json"),
        **cfg_extra,
    )
    RoutingCore.validate_config(cfg)
    ds = load_jsonl(prompts, 32, load_tokenizer(tiny_tokenizer))
    core, seen = RoutingCore(0, cfg), Collector()
    core.callback = seen
    builder = RequestBuilder(ds, stream)
    if batch:  # as the SUT issues Offline queries: columns
        core.enqueue(RequestBatch(list(range(len(ds))), list(range(len(ds))), 0, builder))
    else:
        core.enqueue(builder.build(range(len(ds)), range(len(ds)), 0))
    assert core.flush(10)
    core.close()
    return core, seen


def pool_of(core, response):
    for name, pool in core.pools.items():
        if any(c.core_id == response.core_id for c in pool.cores):
            return name
    raise AssertionError(response)


@pytest.mark.parametrize("batch", [False, True], ids=["requests", "batch"])
def test_prompts_are_decoded_routed_and_answered_by_their_pools(
    tmp_path, tiny_tokenizer, prompts, batch
):
    core, seen = run_core(tmp_path, tiny_tokenizer, prompts, zero_pools(), batch=batch)
    finals = seen.finals()
    assert sorted(finals) == list(range(len(PROMPTS))) and all(r.ok for r in finals.values())
    routed = {q: pool_of(core, r) for q, r in finals.items()}
    assert routed[0] == "code"  # the gate: #include
    assert core.routing_stats()["sources"]["gate"] == 1
    # the shipped router on prompts it has not seen (one of each kind at least right)
    assert routed[1] == "code"
    assert "general" in (routed[2], routed[3])
    assert "reasoning" in (routed[4], routed[5])
    stats = json.loads((tmp_path / "routing.json").read_text())
    assert stats["queries"] == len(PROMPTS)
    assert sum(stats["per_expert"].values()) == len(PROMPTS)
    assert stats["gate_hit_rate"] == pytest.approx(1 / len(PROMPTS))
    assert stats["imbalance_cv"] >= 0 and stats["margin"]["p50"] >= 0
    assert any(n.startswith("routing: 6 queries") for n in core.report_notes())


@pytest.mark.parametrize("batch", [False, True], ids=["requests", "batch"])
def test_a_failing_pool_hands_its_queries_to_its_fallback(tmp_path, tiny_tokenizer, prompts, batch):
    pools = zero_pools(code={"flags": {"dummy_fail_after": 0}, "fallback": "general"})
    core, seen = run_core(tmp_path, tiny_tokenizer, prompts, pools, batch=batch)
    finals = seen.finals()
    assert len(finals) == len(PROMPTS) and all(r.ok for r in finals.values())
    to_code = core.routing_stats()["per_expert"]["code"]
    assert to_code >= 2
    assert core.stats["fallbacks"] == {"code->general": to_code}
    assert sum(pool_of(core, r) == "general" for r in finals.values()) >= to_code
    assert "routing fallbacks: code->general" in "\n".join(core.report_notes())


def test_fallbacks_chain_through_pools_that_serve_only_as_fallbacks(
    tmp_path, tiny_tokenizer, prompts
):
    # code at "FP8" fails, then code_bf16 fails too, then general answers
    pools = zero_pools(code={"flags": {"dummy_fail_after": 0}, "fallback": "code_bf16"})
    pools["code_bf16"] = {
        "core_type": "dummy",
        "num_cores": 1,
        "fallback": "general",
        "flags": {"engine_profile": "zero", "dummy_fail_after": 0},
    }
    core, seen = run_core(tmp_path, tiny_tokenizer, prompts, pools)
    finals = seen.finals()
    assert len(finals) == len(PROMPTS) and all(r.ok for r in finals.values())
    to_code = core.routing_stats()["per_expert"]["code"]
    assert to_code >= 2
    assert core.stats["fallbacks"] == {"code->code_bf16": to_code, "code_bf16->general": to_code}


def test_a_fallback_cycle_ends_in_failure_not_a_loop(tmp_path, tiny_tokenizer, prompts):
    pools = zero_pools(
        code={"flags": {"dummy_fail_after": 0}, "fallback": "general"},
        general={"flags": {"dummy_fail_after": 0}, "fallback": "code"},
    )
    core, seen = run_core(tmp_path, tiny_tokenizer, prompts, pools)
    finals = seen.finals()
    assert len(finals) == len(PROMPTS) and core.pending == 0
    failed = [r for r in finals.values() if not r.ok]
    assert len(failed) == core.stats["failed_no_fallback"] >= 2  # code's and general's queries


def test_a_failing_pool_with_no_fallback_fails_its_queries(tmp_path, tiny_tokenizer, prompts):
    pools = zero_pools(code={"flags": {"dummy_fail_after": 0}})
    core, seen = run_core(tmp_path, tiny_tokenizer, prompts, pools, stream=True)
    finals = seen.finals()
    failed = [q for q, r in finals.items() if not r.ok]
    assert len(finals) == len(PROMPTS)  # every query completed, none lost
    assert (
        len(failed)
        == core.routing_stats()["per_expert"]["code"]
        == core.stats["failed_no_fallback"]
    )
    assert core.pending == 0


def test_configuration_errors_are_clear(tmp_path, tiny_tokenizer):
    def check(pools, match, **cfg_extra):
        path = write_config(tmp_path / "bad.yaml", pools)
        cfg = make_cfg(
            core_type="routing",
            routing_config=str(path),
            tokenizer_path=str(tiny_tokenizer),
            **cfg_extra,
        )
        with pytest.raises(ConfigError, match=match):
            RoutingCore.validate_config(cfg)

    check(zero_pools(code={"flags": {"engine_profil": "zero"}}), "(?i)did you mean.*engine_profile")
    two = zero_pools()
    del two["reasoning"]
    check(two, "can choose reasoning but no pool")
    check(zero_pools(code={"fallback": "gpu"}), "fallback")
    check(zero_pools(code={"core_type": "routing"}), "cannot be a pool")
    check(zero_pools(code={"core_type": "dumy"}), "(?i)did you mean.*dummy")
    check(zero_pools(code={"replicas": 2}), "key")
    for key, bad, want in (
        ("max_words", 0, "max_words must be at least 1"),
        ("confidence_threshold", 1.5, r"confidence_threshold must be in \[0, 1\]"),
        ("tie_margin", -0.1, "tie_margin must be 0 or more"),
        ("top_k", 0, "top_k must be at least 1"),
    ):
        kw = {"threshold": bad} if key == "confidence_threshold" else {key: bad}
        path = write_config(tmp_path / "range.yaml", zero_pools(), **kw)
        with pytest.raises(ConfigError, match=want):
            RoutingCore.validate_config(
                make_cfg(routing_config=str(path), tokenizer_path=str(tiny_tokenizer))
            )
    cfg = make_cfg(core_type="routing", tokenizer_path="")
    with pytest.raises(ConfigError, match="--tokenizer_path"):
        RoutingCore.validate_config(cfg)
    with pytest.raises(UnknownNameError):
        write_config(tmp_path / "x.yaml", zero_pools(), max_word=3)
        RoutingCore.validate_config(
            make_cfg(routing_config=str(tmp_path / "x.yaml"), tokenizer_path=str(tiny_tokenizer))
        )


@pytest.mark.slow
def test_a_routed_run_through_loadgen_is_valid_with_its_routing_report(
    tmp_path, tiny_tokenizer, prompts
):
    pools = zero_pools()
    for name in pools:
        pools[name]["flags"] = {"engine_profile": "cpu-tiny"}
    yaml_path = write_config(tmp_path / "routing.yaml", pools)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            f"--log_dir={tmp_path / 'logs'}",
            "--core_type=routing",
            f"--routing_config={yaml_path}",
            f"--tokenizer_path={tiny_tokenizer}",
            f"--dataset_path={prompts}",
            "--scenarios=offline,server",
            "--min_duration=1000",
            "--min_query_count=500",  # (fewer: Server's p99 early stopping cannot pass)
            "--server_target_qps=100",
            "--progress=false",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr
    runs = list((tmp_path / "logs").rglob("summary.json"))
    assert len(runs) == 2
    for s_path in runs:
        s = json.loads(s_path.read_text())
        assert s["validity"] == "VALID", s["reasons"]
        assert s["harness"]["failed"] == 0
        stats = json.loads((s_path.parent / "routing.json").read_text())
        assert stats["queries"] == s["harness"]["issued"]  # warmup not counted
        assert set(stats["per_expert"]) == {"general", "code", "reasoning"}
        assert stats["per_expert"]["code"] > 0
        assert any(n.startswith("routing:") for n in s["notes"])


def test_a_prompt_that_cannot_be_read_goes_to_the_default_expert(
    tmp_path, tiny_tokenizer, monkeypatch
):
    import numpy as np

    monkeypatch.chdir(tmp_path)  # where a relative routing_stats_file would be written

    from llmlib.serving.request import LLMRequest

    yaml_path = write_config(tmp_path / "routing.yaml", zero_pools())
    cfg = make_cfg(
        core_type="routing",
        routing_config=str(yaml_path),
        tokenizer_path=str(tiny_tokenizer),
        routing_stats_file="",
    )
    core, seen = RoutingCore(0, cfg), Collector()
    core.callback = seen
    bad = np.array([2**40], dtype=np.int64)  # no tokenizer can decode this id
    good = np.array(load_tokenizer(tiny_tokenizer).encode("def f(x): return x"), np.uint32)
    core.enqueue([LLMRequest(1, 0, bad, 8, output_len=4), LLMRequest(2, 1, good, 8, output_len=4)])
    assert core.flush(10)
    core.close()
    finals = seen.finals()
    assert sorted(finals) == [1, 2] and all(r.ok for r in finals.values())
    assert pool_of(core, finals[1]) == "general"  # the default expert
    assert core.routing_stats()["sources"]["error"] == 1
    assert not (tmp_path / "routing.json").exists()  # routing_stats_file '' writes nothing


def test_a_long_prompt_is_routed_on_its_head_decoded_alone(tmp_path, tiny_tokenizer):
    from llmlib.router.features import MAX_CHARS, prepare

    cfg = make_cfg(
        core_type="routing",
        routing_config=str(write_config(tmp_path / "r.yaml", zero_pools())),
        tokenizer_path=str(tiny_tokenizer),
        routing_stats_file="",
    )
    core = RoutingCore(0, cfg)
    try:
        tok = load_tokenizer(tiny_tokenizer)
        for prompt in (PROMPTS[4] + " ") * 400, PROMPTS[1] * 300, "x" * 9000:
            ids = np.asarray(tok.encode(prompt), dtype=np.uint32)
            full = tok.decode(ids.tolist())
            head = core._text(0, ids)
            assert len(head) < len(full)  # the rest was not decoded
            assert head[:MAX_CHARS] == full[:MAX_CHARS] and prepare(head) == prepare(full)
            assert core.router.decide(head) == core.router.decide(full)
        short = np.asarray(tok.encode(PROMPTS[0]), dtype=np.uint32)
        assert core._text(1, short) == tok.decode(short.tolist())
    finally:
        core.close()
