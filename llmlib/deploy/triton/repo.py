"""``generate_triton_config``: a Triton model repository for LLM serving.

Three kinds, one tensor interface (the TensorRT-LLM backend's, ``TENSORS``):

* ``tensorrtllm``: ``config.pbtxt`` for the TensorRT-LLM backend (decoupled, in-flight
  batching, KV-cache and batching settings from the run's ``build_flags`` and
  ``runtime_flags``) pointing at an engine directory. Written here, run where TensorRT-LLM
  is installed (it cannot run on this project's machines; the docs say so).
* ``python``: a Python-backend model (``llmlib.triton_backend_model``) running the project's
  tiny Llama in numpy, real tokens, for machines without TensorRT-LLM; the model's weights
  stay where they are (``model_dir``).
* ``counting``: the same Python-backend model with no weights (each token the last + 1,
  modulo ``vocab_size``, one every ``token_interval_ms``): a server that costs next to
  nothing, so a client's own ceiling shows (``make bench-triton``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"  # files copied into a repository
TINY_LLAMA = Path(__file__).resolve().parents[2] / "model" / "tiny_llama_np.py"

# (name, data type, dims without the batch dimension, optional, reshape to a scalar)
TENSORS_IN = [
    ("input_ids", "TYPE_INT32", "[ -1 ]", False, False),
    ("input_lengths", "TYPE_INT32", "[ 1 ]", False, True),
    ("request_output_len", "TYPE_INT32", "[ 1 ]", False, False),
    ("end_id", "TYPE_INT32", "[ 1 ]", True, True),
    ("pad_id", "TYPE_INT32", "[ 1 ]", True, True),
    ("streaming", "TYPE_BOOL", "[ 1 ]", True, False),
    ("beam_width", "TYPE_INT32", "[ 1 ]", True, True),
    ("stop_words_list", "TYPE_INT32", "[ 2, -1 ]", True, False),
]
TENSORS_OUT = [
    ("output_ids", "TYPE_INT32", "[ -1, -1 ]"),
    ("sequence_length", "TYPE_INT32", "[ -1 ]"),
]


def _tensors() -> str:
    parts = []
    for name, dtype, dims, optional, scalar in TENSORS_IN:
        extra = "\n    reshape: { shape: [ ] }" if scalar else ""
        extra += "\n    optional: true" if optional else ""
        extra += "\n    allow_ragged_batch: true" if dims.startswith("[ -1") or "-1" in dims else ""
        parts.append(
            f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: {dims}{extra}\n  }}'
        )
    outs = [
        f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: {d}\n  }}' for n, t, d in TENSORS_OUT
    ]
    return "input [\n" + ",\n".join(parts) + "\n]\noutput [\n" + ",\n".join(outs) + "\n]\n"


def _params(params: Mapping[str, Any]) -> str:
    return "".join(
        f'parameters: {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}\n'
        for k, v in params.items()
    )


def generate_triton_config(
    repo: str | Path,
    kind: str = "python",
    model_name: str = "tensorrt_llm",
    model_dir: str | Path = "",
    engine_dir: str | Path = "",
    build_flags: Mapping[str, Any] | None = None,
    runtime_flags: Mapping[str, Any] | None = None,
    max_concurrency: int = 8,
    instances: int = 1,
    vocab_size: int = 32000,
    token_interval_ms: float = 0.0,
    fault: str = "",
    fault_every: int = 0,
) -> Path:
    """Write ``<repo>/<model_name>/`` (config.pbtxt and version 1) and return its path.
    A counting model misbehaves on every ``fault_every``-th request as ``fault`` says
    (``llmlib.triton_backend_model``: error, error_after_first, stall, zero_tokens, silent)."""
    build, runtime = dict(build_flags or {}), dict(runtime_flags or {})
    mdir = Path(repo) / model_name
    version = mdir / "1"
    version.mkdir(parents=True, exist_ok=True)
    batch = int(runtime.get("max_batch_size", build.get("max_batch_size", 64)))
    head = f'name: "{model_name}"\n'
    if kind in ("python", "counting"):
        src = Path(model_dir)
        if kind == "python":
            if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
                raise ConfigError(
                    f"{src}: no tiny Llama there (config.json, model.safetensors); make tiny-model"
                )
            params: dict[str, Any] = {"model_dir": src.resolve()}
            shutil.copyfile(TINY_LLAMA, version / "tiny_llama_np.py")
        else:
            params = {"vocab_size": vocab_size, "token_interval_ms": token_interval_ms}
            if fault:
                params.update(fault=fault, fault_every=max(1, fault_every))
        shutil.copyfile(ASSETS / "model.py", version / "model.py")
        head += f'backend: "python"\nmax_batch_size: {batch}\n'
        params["max_concurrency"] = max_concurrency
        group = f"instance_group [ {{ count: {instances}\n  kind: KIND_CPU }} ]\n"
    elif kind == "tensorrtllm":
        if not engine_dir:
            raise ConfigError("a tensorrtllm model repository needs the engine directory")
        head += f'backend: "tensorrtllm"\nmax_batch_size: {batch}\n'
        head += f"dynamic_batching {{\n  preferred_batch_size: [ {batch} ]\n}}\n"
        params = {
            "gpt_model_path": Path(engine_dir).resolve(),
            "gpt_model_type": "inflight_fused_batching"
            if runtime.get("use_inflight_batching", True)
            else "v1",
            "max_beam_width": 1,
            "batch_scheduler_policy": runtime.get("batch_scheduler_policy", "max_utilization"),
            "kv_cache_free_gpu_mem_fraction": runtime.get("kvcache_free_gpu_mem_frac", 0.9),
            "enable_kv_cache_reuse": str(runtime.get("enable_kv_cache_reuse", False)).lower(),
            "enable_chunked_context": str(runtime.get("enable_chunked_context", False)).lower(),
            "exclude_input_in_output": "true",
            "max_num_tokens": runtime.get("max_num_tokens", build.get("max_num_tokens", 8192)),
        }
        group = "instance_group [ { count: 1\n  kind: KIND_CPU } ]\n"
    else:
        raise ConfigError(f"triton model kind {kind!r}: python, counting or tensorrtllm")
    text = head + "model_transaction_policy {\n  decoupled: true\n}\n" + _tensors()
    (mdir / "config.pbtxt").write_text(text + group + _params(params))
    return mdir
