"""make tiny-model's Llama: built here, loads with transformers, generates deterministically."""

import shutil

import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
transformers = pytest.importorskip("transformers")


def test_tiny_llama_loads_and_generates_from_the_tokenizer(tmp_path, tiny_tokenizer):
    from harness.tools.tiny_model import build_llama
    from llmlib.data.tokenizer import load_tokenizer

    out = tmp_path / "tiny"
    shutil.copytree(tiny_tokenizer, out)
    tok = load_tokenizer(out)
    build_llama(out, tok.vocab_size)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.head_dim == 32 and model.config.num_hidden_layers == 2
    assert model.dtype == torch.bfloat16 and model.config.eos_token_id == tok.eos_id
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    ids = tok.encode("def add(a, b):")
    assert hf_tok("def add(a, b):", add_special_tokens=False).input_ids == ids[1:]
    x = torch.tensor([ids])
    a = model.generate(x, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    b = model.generate(x, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert a.tolist() == b.tolist() and a.shape[1] == len(ids) + 6
    assert int(a.max()) < tok.vocab_size


def test_the_numpy_tiny_llama_generates_what_transformers_does(tiny_model):
    import torch
    from transformers import LlamaForCausalLM

    from llmlib.model.tiny_llama_np import TinyLlama

    ref = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    mine = TinyLlama(tiny_model)
    for prompt in ([1, 5, 9, 200, 33], list(range(3, 70)), [1]):
        with torch.no_grad():
            out = ref.generate(
                torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                pad_token_id=0, eos_token_id=None,
            )  # fmt: skip
        assert list(mine.generate(prompt, 20)) == out[0, len(prompt) :].tolist(), prompt
    first = next(mine.generate([1, 5, 9], 1))
    assert list(mine.generate([1, 5, 9], 20, end_id=first)) == [first]  # stops at end_id


def test_triton_model_repositories(tmp_path, tiny_model):
    from llmlib.deploy.triton.repo import generate_triton_config
    from llmlib.errors import ConfigError

    m = generate_triton_config(tmp_path / "py", "python", "tiny", model_dir=tiny_model,
                               runtime_flags={"max_batch_size": 16})  # fmt: skip
    text = (m / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "max_batch_size: 16" in text
    assert "decoupled: true" in text and str(tiny_model.resolve()) in text
    names = ["input_ids", "input_lengths", "request_output_len", "end_id", "pad_id"]
    names += ["streaming", "beam_width", "stop_words_list", "output_ids", "sequence_length"]
    for name in names:
        assert f'name: "{name}"' in text
    assert (m / "1" / "model.py").is_file() and (m / "1" / "tiny_llama_np.py").is_file()
    t = generate_triton_config(
        tmp_path / "trt", "tensorrtllm", engine_dir="/engines/llama",
        build_flags={"max_batch_size": 256, "max_num_tokens": 8192},
        runtime_flags={"enable_kv_cache_reuse": True, "kvcache_free_gpu_mem_frac": 0.95},
    )  # fmt: skip
    text = (t / "config.pbtxt").read_text()
    assert 'backend: "tensorrtllm"' in text and "max_batch_size: 256" in text
    assert '"/engines/llama"' in text and "inflight_fused_batching" in text
    assert 'key: "enable_kv_cache_reuse"\n  value: { string_value: "true" }' in text
    assert 'string_value: "0.95"' in text
    with pytest.raises(ConfigError, match="make tiny-model"):
        generate_triton_config(tmp_path / "x", "python", model_dir=tmp_path)
    with pytest.raises(ConfigError, match="engine directory"):
        generate_triton_config(tmp_path / "x", "tensorrtllm")
    with pytest.raises(ConfigError, match="python, counting or tensorrtllm"):
        generate_triton_config(tmp_path / "x", "onnx")


def test_the_numpy_tiny_llama_scores_as_transformers_does(tiny_model):
    import torch
    from transformers import LlamaForCausalLM

    from llmlib.model.tiny_llama_np import TinyLlama

    ref = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    mine = TinyLlama(tiny_model)
    for ctx, cont in (([1, 5, 9], [200, 33, 7]), (list(range(3, 60)), [4]), ([1], [1, 1, 1])):
        with torch.no_grad():
            logp = torch.log_softmax(ref(torch.tensor([ctx + cont])).logits[0], dim=-1)
        want = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
        assert mine.loglikelihood(ctx, cont) == pytest.approx(want, abs=1e-3), (ctx, cont)
        assert want < 0
    with torch.no_grad():  # an empty context is scored after the BOS token
        logp = torch.log_softmax(ref(torch.tensor([[mine.cfg["bos_token_id"], 8]])).logits[0], -1)
    assert mine.loglikelihood([], [8]) == pytest.approx(float(logp[0, 8]), abs=1e-3)
    with pytest.raises(ValueError, match="at least one token"):
        mine.loglikelihood([1], [])


def test_the_numpy_tiny_llama_samples_reproducibly(tiny_model):
    from llmlib.model.tiny_llama_np import TinyLlama

    m = TinyLlama(tiny_model)
    greedy = list(m.generate([1, 5, 9], 12))
    a = list(m.generate([1, 5, 9], 12, temperature=1.5, seed=3))
    assert a == list(m.generate([1, 5, 9], 12, temperature=1.5, seed=3))
    others = [list(m.generate([1, 5, 9], 12, temperature=1.5, seed=s)) for s in range(4, 8)]
    assert any(o != a for o in others) and a != greedy  # a random model: sampling differs
    # a nucleus too small for a second token is greedy, whatever the temperature
    assert list(m.generate([1, 5, 9], 12, temperature=2.0, top_p=1e-9, seed=5)) == greedy
