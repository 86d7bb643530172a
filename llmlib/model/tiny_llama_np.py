"""The project's tiny Llama (``make tiny-model``) in numpy alone, for generation (greedy or
sampled) and for scoring a continuation's log-probability where torch is not at hand:
Triton's Python backend here runs a stub whose Python has numpy < 2 and nothing else of ours
(``llmlib.deploy.triton.repo`` copies this file next to its model.py).

It reads ``config.json`` and ``model.safetensors`` (bf16, f16 or f32 tensors, parsed by
hand: an 8-byte header length, a JSON header, raw little-endian data) and computes in float32:
RMSNorm, rotary embeddings (the default rope, ``rope_theta``), grouped-query attention with
a KV cache, SiLU-gated MLP. Only numpy and the standard library: it must import in both
numpy 1.x (the stub) and 2.x (the harness, whose tests compare it with transformers).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor in the file, as float32 arrays."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}; F32, F16 or BF16 expected")
        start, end = info["data_offsets"]
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype], count=-1, offset=base + start)
        arr = arr[: (end - start) // arr.itemsize]
        if dtype == "BF16":  # the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float32).reshape(info["shape"])
    return out


class TinyLlama:
    """Greedy generation, one sequence at a time (each with its own KV cache)."""

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        cfg: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg
        w = load_safetensors(model_dir / "model.safetensors")
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.heads
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        rope = cfg.get("rope_parameters") or {}
        theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        self.inv_freq = 1.0 / theta ** (
            np.arange(0, self.head_dim, 2, dtype=np.float32) / self.head_dim
        )
        self.eos_id = int(cfg.get("eos_token_id", 2))
        self.embed = w["model.embed_tokens.weight"]
        head = w.get("lm_head.weight")
        self.lm_head = self.embed if head is None else head
        self.norm = w["model.norm.weight"]
        self.w = [
            {
                k: w[f"model.layers.{i}.{k}.weight"]
                for k in (
                    "input_layernorm",
                    "post_attention_layernorm",
                    "self_attn.q_proj",
                    "self_attn.k_proj",
                    "self_attn.v_proj",
                    "self_attn.o_proj",
                    "mlp.gate_proj",
                    "mlp.up_proj",
                    "mlp.down_proj",
                )
            }  # fmt: skip
            for i in range(self.layers)
        ]

    def _rms(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(var + self.eps) * g

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: (heads, tokens, head_dim); the halves rotated (transformers' rotate_half)."""
        ang = pos[:, None].astype(np.float32) * self.inv_freq[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)
        half = self.head_dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def _forward(
        self, ids: np.ndarray, cache: list[list[np.ndarray]], every: bool = False
    ) -> np.ndarray:
        """Logits of the last token (``every``: of every token of ``ids``, one row each);
        ``cache`` (per layer [k, v]) grows by ``ids``."""
        past = cache[0][0].shape[1] if cache[0] else 0
        pos = np.arange(past, past + len(ids))
        x = self.embed[ids]
        n, hd, rep = len(ids), self.head_dim, self.heads // self.kv_heads
        mask = np.triu(np.full((n, past + n), -np.inf, dtype=np.float32), k=past + 1)
        for i, w in enumerate(self.w):
            h = self._rms(x, w["input_layernorm"])
            q = (h @ w["self_attn.q_proj"].T).reshape(n, self.heads, hd).transpose(1, 0, 2)
            k = (h @ w["self_attn.k_proj"].T).reshape(n, self.kv_heads, hd).transpose(1, 0, 2)
            v = (h @ w["self_attn.v_proj"].T).reshape(n, self.kv_heads, hd).transpose(1, 0, 2)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if cache[i]:
                k = np.concatenate([cache[i][0], k], axis=1)
                v = np.concatenate([cache[i][1], v], axis=1)
            cache[i] = [k, v]
            if rep > 1:
                k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
            att = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            o = (att @ v).transpose(1, 0, 2).reshape(n, self.heads * hd)
            x = x + o @ w["self_attn.o_proj"].T
            h = self._rms(x, w["post_attention_layernorm"])
            g = h @ w["mlp.gate_proj"].T
            x = x + ((g / (1.0 + np.exp(-g))) * (h @ w["mlp.up_proj"].T)) @ w["mlp.down_proj"].T
        return self._rms(x if every else x[-1], self.norm) @ self.lm_head.T

    def _bos(self) -> np.ndarray:
        return np.array([int(self.cfg.get("bos_token_id", 1))])

    def loglikelihood(self, context: Any, continuation: Any) -> float:
        """The sum of ``continuation``'s token log-probabilities after ``context`` (the BOS
        token where the context is empty), in one forward pass over both."""
        ctx = np.asarray(context, dtype=np.int64)
        cont = np.asarray(continuation, dtype=np.int64)
        if len(cont) == 0:
            raise ValueError("a continuation holds at least one token")
        if len(ctx) == 0:
            ctx = self._bos()
        ids = np.concatenate([ctx, cont])
        logits = self._forward(ids, [[] for _ in range(self.layers)], every=True)
        rows = logits[len(ctx) - 1 : len(ids) - 1].astype(np.float64)
        top = rows.max(axis=1, keepdims=True)
        logz = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
        return float((rows[np.arange(len(cont)), cont] - logz).sum())

    def generate(
        self,
        prompt: Any,
        max_new_tokens: int,
        end_id: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Any:
        """Yield tokens one by one (stops after ``end_id``, included, or the cap): greedy at
        temperature 0, else sampled from the softmax of the logits over ``temperature``,
        kept to the smallest set of tokens whose probability reaches ``top_p`` (nucleus),
        with a generator seeded by ``seed`` (the same seed, the same tokens)."""
        cache: list[list[np.ndarray]] = [[] for _ in range(self.layers)]
        ids = np.asarray(prompt, dtype=np.int64)
        if len(ids) == 0:
            ids = self._bos()
        rng = np.random.default_rng(seed)
        for _ in range(max_new_tokens):
            logits = self._forward(ids, cache)
            if temperature <= 0:
                token = int(np.argmax(logits))
            else:
                token = _sample(logits, temperature, top_p, rng)
            yield token
            if end_id is not None and token == end_id:
                return
            ids = np.array([token])


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng: Any) -> int:
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1  # reaches top_p
    kept = order[:keep]
    return int(kept[rng.choice(len(kept), p=p[kept] / p[kept].sum())])
