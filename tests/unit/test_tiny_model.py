"""make tiny-model's Llama: built here, loads with transformers, generates deterministically."""

import shutil

import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")
transformers = pytest.importorskip("transformers")


def test_tiny_llama_loads_and_generates_from_the_tokenizer(tmp_path, tiny_tokenizer):
    from harness.tiny_model import build_llama
    from llmlib.tokenizer import load_tokenizer

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
