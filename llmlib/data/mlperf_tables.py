"""MLPerf's published dataset tables, read as the reference implementations read them.

Each benchmark family's files are a table (a pandas DataFrame pickled, a Parquet file, or a
JSON array of records) with its own columns, found in the reference implementations under
``language/`` in mlcommons/inference:

* llama2-70b: ``open_orca_gpt4_tokenized_llama.sampled_24576.pkl``: ``tok_input``, reference
  ``tok_output`` and ``output`` (text).
* mixtral-8x7b: ``2024.06.06_mixtral_15k_v4.pkl``: ``tok_input``, ``dataset`` (OpenOrca,
  GSM8K, MBXP), ``gt_output``, ``id``, reference ``tok_ref_output``.
* llama3.1-405b: ``mlperf_llama3.1_405b_dataset_8313_processed_fp16_eval.pkl``:
  ``tok_input``, ``gt_output``, ``metric`` (rouge, qa_em, niah_em).
* llama3.1-8b: ``cnn_eval.json`` (edge: ``sample_cnn_eval_5000.json``), a JSON array read
  with ``pandas.read_json`` (``language/llama3.1-8b/dataset.py``): ``tok_input``, ``input``,
  ``output`` (the reference summary).
* deepseek-r1: ``mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl``: ``text_input`` (the
  prompt, tokenized by the harness with the model's chat template) or ``tok_input``,
  ``ground_truth`` (or ``gt_output``), ``dataset`` (aime, math500, gpqa, mmlu_pro,
  livecodebench: the scorer picks the evaluator by name), ``question``
  (``language/deepseek-r1/eval_accuracy.py``, ``mlperf/utils.py``).
* gpt-oss-120b: ``perf/perf_eval_ref.parquet``, ``acc/acc_eval_inputs.parquet``,
  ``acc/acc_eval_compliance_gpqa.parquet`` (or the same as pickles): ``tok_input`` (or
  ``input_tokens``), ``dataset`` (aime25, gpqa_diamond, livecodebench_v6), ``ground_truth``
  (``language/gpt-oss-120b/utils/tokenization.py``, ``eval_mlperf_accuracy.py``).

deepseek-r1's and gpt-oss-120b's files are read with reference output tokens when they have
a ``tok_ref_output`` column (the name mixtral-8x7b's and llama3.1-405b's files use; the
published files may not have one: then the dummy core answers with pseudo tokens).

Only the prompt (and for mixtral-8x7b and llama3.1-405b the columns that route scoring) is
required to run; the other scoring columns are checked when a run is scored
(``llmlib.eval.accuracy``). A missing column is an error naming the file and the columns it
has.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.data.token_dataset import TokenDataset
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError, MissingDependencyError, UnknownNameError


@dataclass(frozen=True)
class TableFormat:
    files: str  # what MLCommons publishes, for messages
    inputs: tuple[str, ...] = ("tok_input",)  # token-id prompt columns, the first found
    text: tuple[str, ...] = ()  # text prompt columns, tokenized when no token column
    refs: tuple[str, ...] = ()  # reference output token columns, the first found
    keep: tuple[str, ...] = ()  # columns kept per sample for the scorers
    required: tuple[str, ...] = ()  # columns a file must have besides the prompt
    aliases: tuple[tuple[str, str], ...] = ()  # (published name, the name kept)


MLPERF_FORMATS: dict[str, TableFormat] = {
    "llama2-70b": TableFormat(
        "open_orca_gpt4_tokenized_llama.sampled_24576.pkl", refs=("tok_output",), keep=("output",)
    ),
    "mixtral-8x7b": TableFormat(
        "2024.06.06_mixtral_15k_v4.pkl",
        refs=("tok_ref_output", "tok_output"),
        keep=("dataset", "gt_output", "id"),
        required=("dataset",),
    ),
    "llama3.1-405b": TableFormat(
        "mlperf_llama3.1_405b_dataset_8313_processed_fp16_eval.pkl",
        refs=("tok_ref_output",),
        keep=("gt_output", "metric"),
        required=("gt_output", "metric"),
    ),
    "llama3.1-8b": TableFormat("cnn_eval.json or sample_cnn_eval_5000.json", keep=("output",)),
    "deepseek-r1": TableFormat(
        "mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl",
        text=("text_input",),
        refs=("tok_ref_output",),
        keep=("dataset", "ground_truth", "question"),
        aliases=(("gt_output", "ground_truth"),),
    ),
    "gpt-oss-120b": TableFormat(
        "perf_eval_ref.parquet, acc_eval_inputs.parquet or acc_eval_compliance_gpqa.parquet",
        inputs=("tok_input", "input_tokens"),
        refs=("tok_ref_output",),
        keep=("dataset", "ground_truth"),
    ),
}
MLPERF_FORMATS["llama2-70b-interactive"] = MLPERF_FORMATS["llama2-70b"]


def table_format(family: str) -> TableFormat:
    if family not in MLPERF_FORMATS:
        raise UnknownNameError("benchmark with an MLPerf dataset format", family, MLPERF_FORMATS)
    return MLPERF_FORMATS[family]


def read_table(path: Path, fmt: str) -> Any:
    """The DataFrame in ``path``: ``mlperf_pickle``, ``mlperf_parquet`` or ``mlperf_json``."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError(
            "reading MLPerf dataset files needs pandas: pip install -e .[data]"
        ) from None
    try:
        if fmt == "mlperf_parquet":
            df = pd.read_parquet(path)
        elif fmt == "mlperf_json":
            df = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        else:
            df = pd.read_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError,
            OSError, TypeError, UnicodeDecodeError) as exc:  # fmt: skip
        kind = fmt.removeprefix("mlperf_")
        raise ConfigError(
            f"{path}: not a readable {kind} table ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{path}: expected a pandas DataFrame, found {type(df).__name__}")
    return df


def load_mlperf_table(
    path: Path,
    fmt: str,
    family: str,
    max_new_tokens: int,
    tokenizer: Tokenizer | None = None,
) -> TokenDataset:
    """A benchmark family's published dataset file as a ``TokenDataset``: prompts, reference
    tokens where the file has them, the scoring columns kept per sample."""
    spec = table_format(family)
    df = read_table(path, fmt)
    cols = [str(c) for c in df.columns]
    have = ", ".join(cols)
    tok_col = next((c for c in spec.inputs if c in cols), None)
    text_col = next((c for c in spec.text if c in cols), None)
    missing = [c for c in spec.required if c not in cols]
    if tok_col is None and text_col is None:
        missing.insert(0, " or ".join(spec.inputs + spec.text))
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)} for {family} (found: {have}; "
            f"the published file is {spec.files})"
        )
    for published, kept in spec.aliases:
        if kept not in cols and published in cols:
            df = df.rename(columns={published: kept})
    cols = [str(c) for c in df.columns]
    kept_cols = [c for c in spec.keep if c in cols]
    fields = [
        {c: _plain(v) for c, v in zip(kept_cols, row, strict=True)}
        for row in df[kept_cols].itertuples(index=False, name=None)
    ] if kept_cols else None  # fmt: skip
    ref_col = next((c for c in spec.refs if c in cols), None)
    refs = list(df[ref_col]) if ref_col else None
    notes: list[str] = []
    if tok_col is not None:
        inputs = list(df[tok_col])
    else:
        if tokenizer is None:
            raise ConfigError(
                f"{path}: the prompts are text ({text_col}) with no token ids: give "
                "--tokenizer_path (the model's tokenizer)"
            )
        assert text_col is not None
        inputs = tokenizer.encode_batch([str(t) for t in df[text_col]])
        notes.append(
            f"prompts tokenized from {text_col} with {tokenizer.path} as written (the "
            "reference applies the model's chat template first)"
        )
    missing = [c for c in spec.keep if c not in cols]
    if missing:
        notes.append(f"{path.name} has no {', '.join(missing)} column: it cannot be scored")
    ds = TokenDataset(
        inputs, max_new_tokens, refs, fields, name=f"mlperf:{family}", source=str(path)
    )
    ds.notes += notes
    ds.columns = cols
    return ds


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
