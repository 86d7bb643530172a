"""The router's features and the C path's handle.

Features (``FEATURE_VERSION`` 2), from the prompt's first ``MAX_CHARS`` characters
lower-cased and split on whitespace (the first ``MAX_WORDS`` words, each cut to
``MAX_WORD_CHARS`` characters, so a prompt of megabytes costs what a short one does):

* each word: ``crc32("w:" + word)``;
* the character 3- and 4-grams of ``"<" + word + ">"``: ``crc32("c:" + gram)``;
* each word's shape (``word_shape``: ASCII digits as ``9``, letters as ``a``, runs of
  either as one, every other character kept, so ``x^2+3x`` is ``a^9+9a``, ``my_var.get()``
  is ``a_a.a()`` and ``\\frac{1}{2}`` is ``\\a{9}{9}``): ``crc32("s:" + shape)``, except for
  a word of letters alone (version 2: math and code signal that no single word carries);
* each pair of neighbouring words: a multiplicative mix of the two words' hashes;

all taken modulo the bucket count (crc32 is stable across processes and machines; Python's
``hash`` is salted and is never used).

The C path (``_C``, None where ``llmlib/router/_routerc.c`` was not built) is loaded here,
so the gate and the router see the same one."""

from __future__ import annotations

import zlib

FEATURE_VERSION = 2
MAX_CHARS = 2048
MAX_WORDS = 128
MAX_WORD_CHARS = 32
CHAR_NGRAMS = (3, 4)
try:  # the C path (llmlib/router/_routerc.c), built with the package where a compiler is there
    from llmlib.router import _routerc as _C  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the numpy path then
    _C = None
_MIX = 0x9E3779B1  # Fibonacci hashing constant (2^32 / golden ratio)
_MASK32 = 0xFFFFFFFF
# stripped from both ends of a word before the gate looks it up again (not ` or #: keywords
# like "```python" and "#include" keep them); _routerc.c's gate_punct has the same set
_GATE_PUNCT = "()[]{}<>\"'.,;:!?\u201c\u201d\u2018\u2019"


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8", "surrogatepass"))


def prepare(text: str | bytes) -> list[str]:
    """The words features are taken from: lower-cased, split on whitespace, capped. Bytes
    that are not UTF-8 are replaced, never an error."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"a prompt is text or bytes, not {type(text).__name__}")
    words = text[:MAX_CHARS].lower().split()[:MAX_WORDS]
    if words and max(map(len, words)) > MAX_WORD_CHARS:
        return [w[:MAX_WORD_CHARS] for w in words]
    return words


def word_shape(word: str) -> str | None:
    """The word with ASCII digits as ``9`` and letters as ``a``, a run of either as one,
    every other character as it is; None for a word of letters alone (the commonest shape,
    which says nothing)."""
    out: list[str] = []
    for ch in word:
        c = "9" if "0" <= ch <= "9" else "a" if ch.isalpha() else ch
        if not (out and out[-1] == c and c in ("a", "9")):
            out.append(c)
    shape = "".join(out)
    return None if shape == "a" else shape


def word_features(word: str, buckets: int) -> list[int]:
    """The bucket ids of one word: the word itself, its character n-grams and its shape."""
    out = [_crc("w:" + word) % buckets]
    padded = f"<{word}>"
    for n in CHAR_NGRAMS:
        out += [_crc("c:" + padded[i : i + n]) % buckets for i in range(len(padded) - n + 1)]
    shape = word_shape(word)
    if shape is not None:
        out.append(_crc("s:" + shape) % buckets)
    return out


def bigram_bucket(h1: int, h2: int, buckets: int) -> int:
    return (((h1 * _MIX) & _MASK32) ^ h2) % buckets


def feature_ids(text: str | bytes, buckets: int) -> list[int]:
    """Every feature bucket of ``text``, in a fixed order (the reference the fast path and
    training both follow)."""
    words = prepare(text)
    out: list[int] = []
    hashes = [_crc("w:" + w) for w in words]
    for w in words:
        out += word_features(w, buckets)
    out += [bigram_bucket(a, b, buckets) for a, b in zip(hashes, hashes[1:], strict=False)]
    return out


# --- gate -------------------------------------------------------------------------------------
