"""Datasets given as token ids: MLPerf's preprocessed pickles (pandas DataFrames) and JSONL
(token ids or text per line)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.data.text_sources import TextSample, cache_load, iter_jsonl, source_key, tokenized
from llmlib.data.token_dataset import TokenDataset
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError, MissingDependencyError, UnknownNameError

# benchmark -> (required columns, reference-token columns tried in order, kept columns)
MLPERF_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "llama2-70b": (("tok_input",), ("tok_output",), ("output",)),
    "llama2-70b-interactive": (("tok_input",), ("tok_output",), ("output",)),
    "mixtral-8x7b": (
        ("tok_input", "dataset"),
        ("tok_ref_output", "tok_output"),
        ("dataset", "gt_output", "id"),
    ),
    "llama3.1-405b": (
        ("tok_input", "gt_output", "metric"),
        ("tok_ref_output",),
        ("gt_output", "metric"),
    ),
}


def load_mlperf_pickle(path: Path, benchmark: str, max_new_tokens: int) -> TokenDataset:
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError(
            "reading MLPerf dataset pickles needs pandas: pip install -e .[data]"
        ) from None
    if benchmark not in MLPERF_COLUMNS:
        raise UnknownNameError("benchmark with an MLPerf pickle format", benchmark, MLPERF_COLUMNS)
    try:
        df = pd.read_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise ConfigError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{path}: expected a pandas DataFrame, found {type(df).__name__}")
    required, ref_cols, keep = MLPERF_COLUMNS[benchmark]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)} for {benchmark} "
            f"(found: {', '.join(map(str, df.columns))})"
        )
    ref_col = next((c for c in ref_cols if c in df.columns), None)
    kept = [c for c in keep if c in df.columns]
    fields = [{c: _plain(row[c]) for c in kept} for _, row in df[kept].iterrows()] if kept else None
    return TokenDataset(
        list(df["tok_input"]),
        max_new_tokens,
        list(df[ref_col]) if ref_col else None,
        fields,
        name=f"mlperf:{benchmark}",
        source=str(path),
    )


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


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
