"""The tiny Llama core: the project's tiny Llama (``make tiny-model``) run in process by its
numpy implementation (``llmlib.model.tiny_llama_np``), no torch or server needed.

A real model at a small size: its tokens come from the weights, greedy or sampled
(``temperature``, ``top_p``, ``seed`` in a request's ``extra``), stopping after the model's
own EOS token (``config.json``'s ``eos_token_id``; ``ignore_eos`` in ``extra``: never) or
at the request's ``max_new_tokens``. It can score text:
``loglikelihood`` gives the sum of a continuation's token log-probabilities after a context,
which the serving front's ``/loglikelihood`` answers with. One engine thread decodes one
request at a time (the first token is delivered as soon as it is chosen, the whole answer at
the end); a request whose decode raises fails alone, the core stays up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import ConfigError
from llmlib.serving.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse


@dataclass(frozen=True)
class TinyLlamaSettings(Section):
    group: ClassVar[str] = "tiny_llama"
    tiny_llama_model: str = setting(
        "build/tiny-model",
        "the directory of the Llama that core_type tiny_llama runs in numpy (make tiny-model)",
        path=True,
    )


def model_dir(cfg: Config) -> Path:
    """The model directory, or a ConfigError saying how to build it."""
    path = Path(TinyLlamaSettings.of(cfg).tiny_llama_model)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise ConfigError(
                f"core_type tiny_llama: {path / name} is missing: run make tiny-model, or "
                "point --tiny_llama_model at a directory with config.json and model.safetensors"
            )
    return path


@register_core("tiny_llama")
class TinyLlamaCore(LLMCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True, loglikelihood=True)

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        model_dir(cfg)

    def __init__(self, core_id: int, cfg: Config, callback: CompletionCallback | None = None):
        from llmlib.model.tiny_llama_np import TinyLlama

        super().__init__(core_id, cfg, callback)
        try:
            self.model = TinyLlama(model_dir(cfg))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"core_type tiny_llama: cannot read the model: {exc!r}") from None
        self.vocab = int(self.model.embed.shape[0])  # token ids must be below this
        self._queue: queue.Queue[LLMRequest | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"tiny-llama-{core_id}")
        self._thread.daemon = True
        self._thread.start()

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        for r in requests:
            self._queue.put(r)

    def _run(self) -> None:
        while (req := self._queue.get()) is not None:
            try:
                self._decode(req)
            except Exception as exc:  # this request fails; the next one still runs
                self._fail_requests([req], f"tiny_llama decode failed: {exc!r}")

    def _decode(self, req: LLMRequest) -> None:
        opts: dict[str, Any] = req.extra or {}
        end = None if opts.get("ignore_eos") else self.model.eos_id
        tokens: list[int] = []
        gen = self.model.generate(
            req.input_tokens, req.max_new_tokens, end,
            temperature=float(opts.get("temperature", 0.0)),
            top_p=float(opts.get("top_p", 1.0)), seed=opts.get("seed"),
        )  # fmt: skip
        for tok in gen:
            if self._closed.is_set():
                return
            tokens.append(tok)
            if len(tokens) == 1 and req.stream:
                self._deliver([LLMResponse(req.request_id, [tok], False, time.perf_counter_ns())])
        now = time.perf_counter_ns()
        self._deliver([LLMResponse(req.request_id, tokens, True, now, self.core_id)])

    def loglikelihood(
        self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[float]:
        return [
            self.model.loglikelihood(c, x) for c, x in zip(contexts, continuations, strict=True)
        ]

    def _close_impl(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
