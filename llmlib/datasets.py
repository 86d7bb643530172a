"""Datasets from files, behind the one ``Dataset`` interface the QSL reads.

* ``mlperf_pickle``: MLPerf's preprocessed pickles (pandas DataFrames), given by path:
  llama2-70b (OpenOrca: ``tok_input``, reference ``tok_output``), mixtral-8x7b (``dataset``,
  ``tok_input``, reference ``tok_ref_output``, ``gt_output``), llama3.1-405b (``tok_input``,
  ``gt_output``, ``metric``). Token ids in, reference token ids where the pickle has them;
  the other columns named above are kept per sample (``fields``) for the scorers.
* ``jsonl``: one JSON object per line with ``input_ids`` (a list of token ids) and optionally
  ``output_ids`` (reference output token ids); any other keys are kept per sample.

Text prompts need a tokenizer and arrive with it. Every problem with a file (missing, not
the format, missing columns, bad token ids) is a ``ConfigError`` that names the file.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, MissingDependencyError, UnknownNameError
from .workloads import Dataset

DATASET_FORMATS = ("auto", "mlperf_pickle", "jsonl")

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


class TokenDataset(Dataset):
    """Samples given as token id sequences, with optional reference outputs and per-sample
    fields (what scorers need: ground truth, metric, source dataset)."""

    def __init__(
        self,
        inputs: Sequence[Sequence[int] | np.ndarray],
        max_new_tokens: int,
        references: Sequence[Sequence[int] | np.ndarray | None] | None = None,
        fields: Sequence[dict[str, Any]] | None = None,
        name: str = "tokens",
        source: str = "",
    ) -> None:
        where = source or name
        if not len(inputs):
            raise ConfigError(f"{where}: no samples")
        arrays = [_ids(x, where, i, "input") for i, x in enumerate(inputs)]
        for i, a in enumerate(arrays):
            if len(a) == 0:
                raise ConfigError(f"{where}: sample {i} has an empty prompt")
        lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        refs: list[np.ndarray | None] | None = None
        out_lens = None
        if references is not None:
            if len(references) != len(arrays):
                raise ConfigError(f"{where}: {len(references)} references, {len(arrays)} inputs")
            refs = [
                None if r is None else _ids(r, where, i, "reference")
                for i, r in enumerate(references)
            ]
            have = [r for r in refs if r is not None]
            if len(have) == len(refs):
                out_lens = np.array([min(len(r), max_new_tokens) for r in have], dtype=np.int64)
        super().__init__(np.concatenate(arrays), offsets, out_lens, max_new_tokens)
        self._refs = refs
        self.fields = list(fields) if fields is not None else [{} for _ in arrays]
        self.name = name
        self.source = source

    def reference_tokens(self, i: int) -> np.ndarray | None:
        return None if self._refs is None else self._refs[i]


def _ids(x: Any, where: str, i: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: sample {i}: {what} token ids are not a sequence ({exc})"
        ) from None
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ConfigError(f"{where}: sample {i}: {what} must be a flat list of integer token ids")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(np.uint32).max):
        raise ConfigError(f"{where}: sample {i}: {what} token id out of range")
    return a.astype(np.uint32)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "mlperf_pickle"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(
        f"{path}: cannot tell the dataset format from the name; "
        f"pass --dataset_format ({', '.join(DATASET_FORMATS[1:])})"
    )


def load_dataset(path: str | Path, fmt: str, benchmark: str, max_new_tokens: int) -> TokenDataset:
    """The dataset at ``path`` in format ``fmt`` (``auto``: from the file name)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--dataset_path: file not found: {p}")
    if fmt not in DATASET_FORMATS:
        raise UnknownNameError("dataset format", fmt, DATASET_FORMATS)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "mlperf_pickle":
        return load_mlperf_pickle(p, benchmark, max_new_tokens)
    return load_jsonl(p, max_new_tokens)


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


def load_jsonl(path: Path, max_new_tokens: int) -> TokenDataset:
    inputs, refs, fields = [], [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{n}: expected a JSON object per line")
            if "input_ids" not in obj:
                what = "text" if {"text", "prompt"} & obj.keys() else "no input_ids"
                raise ConfigError(
                    f"{path}:{n}: {what}; this loader takes token ids ('input_ids'), "
                    "text prompts need a tokenizer"
                )
            inputs.append(obj.pop("input_ids"))
            refs.append(obj.pop("output_ids", None))
            fields.append(obj)
    have = [r is not None for r in refs]
    if any(have) and not all(have):
        raise ConfigError(
            f"{path}: 'output_ids' on {sum(have)} of {len(refs)} lines; give it on all or none"
        )
    return TokenDataset(
        inputs,
        max_new_tokens,
        refs if all(have) else None,
        fields,
        name="jsonl",
        source=str(path),
    )
