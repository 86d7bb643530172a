"""A local tokenizer (``tokenizer.json``, Hugging Face ``tokenizers`` format), and the tiny one
the project trains itself (``make tiny-model``): nothing is downloaded.

``load_tokenizer(path)`` takes a directory holding ``tokenizer.json`` (and optionally
``tokenizer_config.json`` naming the BOS/EOS tokens) or the file itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError, MissingDependencyError

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2, as in Llama (EOS = 2)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise MissingDependencyError(
            "text datasets need the 'tokenizers' package: pip install -e .[text]"
        ) from None
    return tokenizers


class Tokenizer:
    """Encode text to token ids and back with a local ``tokenizer.json``."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise ConfigError(f"--tokenizer_path: no tokenizer.json at {p}")
        try:
            self._tok = _tokenizers().Tokenizer.from_file(str(file))
        except Exception as exc:  # the library raises its own exception types
            raise ConfigError(f"{file}: not a tokenizer.json ({exc})") from None
        self.path = file
        self.digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        cfg = file.parent / "tokenizer_config.json"
        conf = json.loads(cfg.read_text()) if cfg.is_file() else {}
        self.bos_token = conf.get("bos_token", "<s>")
        self.eos_token = conf.get("eos_token", "</s>")
        self.bos_id = self._tok.token_to_id(self.bos_token)
        self.eos_id = self._tok.token_to_id(self.eos_token)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else list(ids)

    def encode_batch(self, texts: list[str], add_bos: bool = True) -> list[list[int]]:
        out = self._tok.encode_batch(texts, add_special_tokens=False)
        bos = [self.bos_id] if add_bos and self.bos_id is not None else []
        return [bos + e.ids for e in out]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special))


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer(path)


def train_tiny_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048) -> Path:
    """Train a byte-level BPE tokenizer on ``texts`` and save ``tokenizer.json`` and a
    ``tokenizer_config.json`` (with a chat template) into ``out_dir``."""
    tk = _tokenizers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": 4096,
                "chat_template": (
                    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n"
                    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
                ),
            },
            indent=2,
        )
    )
    return out
