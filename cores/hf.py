"""The transformers core (``--core_type=transformers``): a Hugging Face causal LM in process,
batched continuously by transformers' own manager (``model.init_continuous_batching()``).

Token ids in and out, greedy decoding, stopping at the model's EOS (``config.json``'s
``eos_token_id``) or at the request's ``max_new_tokens``. Every request goes to the manager
as it comes (``add_request``, streaming where LoadGen wants first tokens: Server); one reader
thread takes the manager's results and delivers the first token of a streamed request as
soon as it exists and every request's whole answer when it finishes. A request the manager
fails is failed alone; a manager whose generation thread dies takes the core down and every
pending request fails (nothing hangs). Needs the ``model`` extra (torch, transformers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import BackendError, ConfigError, MissingDependencyError
from llmlib.serving.core import CompletionCallback, CoreCapabilities, LLMCore
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TransformersSettings(Section):
    group: ClassVar[str] = "transformers"
    transformers_model: str = setting(
        "",
        "the model directory of core_type transformers (make tiny-model: build/tiny-model)",
        path=True,
    )
    transformers_dtype: str = setting(
        "auto", "the weights' dtype in memory (auto: the checkpoint's)", choices=DTYPES
    )
    transformers_device: str = setting(
        "auto", "cpu, cuda, cuda:N, or auto (the first GPU if there is one, else the CPU)"
    )
    transformers_cache_blocks: int = setting(
        0,
        "KV-cache blocks (256 tokens each) of the continuous batching manager; 0: sized from "
        "free GPU memory on a GPU, 256 on the CPU (transformers would size it from the "
        "machine's whole memory there)",
        minimum=0,
    )


def _cache(blocks: int | None) -> dict[str, Any]:
    """The manager's KV-cache size as a ContinuousBatchingConfig; nothing when unset or where
    this transformers has no such config (the manager then sizes the cache itself)."""
    if blocks is None:
        return {}
    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
    except ImportError:
        return {}
    return {"continuous_batching_config": ContinuousBatchingConfig(num_blocks=blocks)}


@register_core("transformers")
class TransformersCore(LLMCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True)
    CPU_BLOCKS = 256

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        return 1  # one model, one manager: it batches every request itself

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        path = TransformersSettings.of(cfg).transformers_model
        if not path:
            raise ConfigError(
                "core_type transformers needs a model: --transformers_model=DIR "
                "(make tiny-model builds build/tiny-model)"
            )
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"--transformers_model {path}: no config.json there")

    def __init__(self, core_id: int, cfg: Config, callback: CompletionCallback | None = None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, GenerationConfig
        except ImportError as exc:
            raise MissingDependencyError(
                f"core_type transformers needs torch and transformers ({exc.name}): "
                "pip install -e .[model]"
            ) from None
        self.validate_config(cfg)
        super().__init__(core_id, cfg, callback)
        s = TransformersSettings.of(cfg)
        device = s.transformers_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if s.transformers_dtype == "auto" else getattr(torch, s.transformers_dtype)
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(s.transformers_model, dtype=dtype)
            self.model = model.to(device).eval()
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--transformers_model {s.transformers_model}: {exc}") from None
        self.where = f"{device}, {str(self.model.dtype).removeprefix('torch.')}"
        eos = self.model.config.eos_token_id
        self.eos = -1 if eos is None else eos
        gen = GenerationConfig(do_sample=False, eos_token_id=self.eos, pad_token_id=0)
        blocks = s.transformers_cache_blocks or (self.CPU_BLOCKS if device == "cpu" else None)
        self.manager = self.model.init_continuous_batching(generation_config=gen, **_cache(blocks))
        self.manager.start()
        self._ids: dict[str, LLMRequest] = {}
        self._sent_first: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"transformers-{core_id}")
        self._reader.daemon = True
        self._reader.start()

    def _enqueue_impl(self, requests: Sequence[LLMRequest]) -> None:
        for req in requests:
            key = str(req.request_id)
            with self._lock:
                self._ids[key] = req
            got = self.manager.add_request(
                [int(t) for t in req.input_tokens],
                request_id=key,
                max_new_tokens=int(req.max_new_tokens),
                streaming=bool(req.stream),
                eos_token_id=self.eos,
            )
            if got is None:  # the manager refused it (stopping, or not accepting)
                with self._lock:
                    self._ids.pop(key, None)
                self._fail_requests([req], "transformers' manager refused the request")

    def _read(self) -> None:
        mgr = self.manager
        while not self._stop.is_set():
            r = mgr.get_result(timeout=0.05)
            if r is None:
                if not mgr.is_running() and not self._stop.is_set():
                    self._fail("transformers' generation thread stopped")
                    self._outlive_test()
                    return
                continue
            with self._lock:
                req = self._ids.get(r.request_id)
                if req is None:
                    continue
                first = r.request_id not in self._sent_first
                if r.is_finished():
                    del self._ids[r.request_id]
                    self._sent_first.discard(r.request_id)
                elif first and r.generated_tokens:
                    self._sent_first.add(r.request_id)
            now = time.perf_counter_ns()
            if r.is_finished():
                if r.error is not None:
                    self._fail_requests([req], f"transformers: {r.error}")
                else:
                    out = [int(t) for t in r.generated_tokens]
                    self._deliver([LLMResponse(req.request_id, out, True, now, self.core_id)])
            elif first and r.generated_tokens and req.stream:
                tok = [int(r.generated_tokens[0])]
                self._deliver([LLMResponse(req.request_id, tok, False, now, self.core_id)])

    def _health_check_impl(self) -> None:
        if not self.manager.is_running():
            raise BackendError("transformers' continuous batching manager is not running")

    def report_notes(self) -> list[str]:
        path = TransformersSettings.of(self.cfg).transformers_model
        return [
            f"core {self.core_id}: transformers continuous batching in process on "
            f"{self.where} ({path})"
        ]

    def _close_impl(self) -> None:
        self._stop.set()
        try:  # what is still pending is failed by the base class, not generated first
            self.manager.stop(block=True, timeout=30, hard_stop=True)
        except TypeError:  # a transformers whose stop() has no hard_stop
            self.manager.stop(block=True, timeout=30)
        self._reader.join(timeout=10)
