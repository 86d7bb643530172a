"""Datasets given as JSONL: token ids or text per line (MLPerf's tables: ``mlperf_tables``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlib.data.text_sources import TextSample, cache_load, iter_jsonl, source_key, tokenized
from llmlib.data.token_dataset import TokenDataset
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError


def load_jsonl(
    path: Path,
    max_new_tokens: int,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | Path | None = None,
) -> TokenDataset:
    """Lines with ``input_ids`` (and optional ``output_ids``), or with text: ``text`` or
    ``prompt`` (and optional ``output`` or ``reference``), tokenized with ``tokenizer``."""
    rows: list[dict[str, Any]] = []
    for n, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{n}: expected a JSON object per line")
        if "input_ids" not in obj and not {"text", "prompt"} & obj.keys():
            raise ConfigError(f"{path}:{n}: no input_ids, text or prompt")
        if "input_ids" not in obj and tokenizer is None:
            raise ConfigError(
                f"{path}:{n}: text prompts need a tokenizer: give --tokenizer_path "
                "(make tiny-model builds one)"
            )
        obj["_line"] = n
        rows.append(obj)
    if not rows:
        raise ConfigError(f"{path}: no samples")
    if all("input_ids" in r for r in rows):
        inputs = [r.pop("input_ids") for r in rows]
        refs = [r.pop("output_ids", None) for r in rows]
    elif any("input_ids" in r for r in rows):
        raise ConfigError(f"{path}: mixes token-id lines and text lines; use one kind")
    else:
        assert tokenizer is not None
        texts = [(r.pop("text", None) or r.pop("prompt", ""), r) for r in rows]
        outs = [r.pop("output", None) or r.pop("reference", None) for r in rows]
        samples = [TextSample(t, o, r) for (t, r), o in zip(texts, outs, strict=True)]
        key = source_key("jsonl", path)
        cached = cache_load(cache_dir, key, tokenizer)
        if cached is not None:
            return cached.finish(max_new_tokens, "jsonl", str(path))
        return tokenized(samples, tokenizer, max_new_tokens, cache_dir, key, "jsonl", str(path))
    have = [r is not None for r in refs]
    if any(have) and not all(have):
        raise ConfigError(
            f"{path}: 'output_ids' on {sum(have)} of {len(refs)} lines; give it on all or none"
        )
    for r in rows:
        del r["_line"]
    return TokenDataset(
        inputs, max_new_tokens, refs if all(have) else None, rows, name="jsonl", source=str(path)
    )


# --- text sources: ShareGPT, HumanEval --------------------------------------------------------
