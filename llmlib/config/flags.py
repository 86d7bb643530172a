"""Flag strings: ``key1:value1,key2:value2`` with typed values, checked against a schema.

>>> parse_flag_string("max_batch_size:64,streaming:true", RUNTIME_FLAGS, "runtime_flags")
{'max_batch_size': 64, 'streaming': True}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmlib.errors import ConfigError, UnknownNameError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str, what: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{what}: '{text}' is not a boolean (use true/false)")


def coerce(value: Any, typ: type, what: str) -> Any:
    """Convert a string (or YAML scalar) to ``typ``, with a message naming ``what``."""
    if typ is bool:
        return value if isinstance(value, bool) else parse_bool(str(value), what)
    if typ is str:
        return str(value)
    bad = ConfigError(f"{what}: '{value}' is not a valid {typ.__name__}")
    if isinstance(value, bool):
        raise bad
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(number):
        raise ConfigError(f"{what}: '{value}' is not a finite number")
    if typ is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


def parse_flag_string(text: str, schema: Mapping[str, type], field: str) -> dict[str, Any]:
    """Parse ``key:value`` pairs separated by commas; unknown keys and malformed pairs raise
    ConfigError naming the field, the pair and the valid keys."""
    out: dict[str, Any] = {}
    text = text.strip()
    if not text:
        return out
    for pair in text.split(","):
        key, sep, value = pair.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(
                f"malformed flag string for {field}: '{pair}' is not key:value "
                f"(expected key1:value1,key2:value2)"
            )
        if key not in schema:
            raise UnknownNameError(f"key in {field}", key, schema)
        out[key] = coerce(value, schema[key], f"{field} key '{key}'")
    return out


def check_flag_dict(
    data: Mapping[str, Any], schema: Mapping[str, type], field: str
) -> dict[str, Any]:
    """The same checks for a mapping (from YAML)."""
    out = {}
    for key, value in data.items():
        if key not in schema:
            raise UnknownNameError(f"key in {field}", key, schema)
        out[key] = coerce(value, schema[key], f"{field} key '{key}'")
    return out


def format_flag_string(data: Mapping[str, Any]) -> str:
    return ",".join(f"{k}:{str(v).lower() if isinstance(v, bool) else v}" for k, v in data.items())


# Schemas of the TensorRT-LLM flag-string fields (after NVIDIA's llmlib), and the engine model's.
CHECKPOINT_FLAGS: dict[str, type] = {
    "kv_cache_dtype": str,
    "quantization": str,
    "calib_size": int,
    "tp_size": int,
    "pp_size": int,
    "effective_bits": float,
    "dtype": str,
}
BUILD_FLAGS: dict[str, type] = {
    "max_batch_size": int,
    "max_num_tokens": int,
    "max_seq_len": int,
    "max_input_len": int,
    "tensor_parallelism": int,
    "pipeline_parallelism": int,
    "moe_expert_parallelism": int,
    "gemm_plugin": str,
    "use_paged_context_fmha": bool,
    "use_fp8_context_fmha": bool,
    "use_fused_mlp": bool,
    "multiple_profiles": bool,
    "gather_context_logits": bool,
}
RUNTIME_FLAGS: dict[str, type] = {
    "max_batch_size": int,
    "max_num_tokens": int,
    "exclude_input_from_output": bool,
    "use_inflight_batching": bool,
    "batch_scheduler_policy": str,
    "context_chunking_policy": str,
    "enable_chunked_context": bool,
    "kvcache_free_gpu_mem_frac": float,
    "enable_kv_cache_reuse": bool,
    "streaming": bool,
}
ENGINE_FLAGS: dict[str, type] = {
    "kind": str,
    "ttft_ms": float,
    "tpot_ms": float,
    "max_batch_size": int,
    "max_num_tokens": int,
    "step_base_us": float,
    "step_per_seq_us": float,
    "prefill_per_token_us": float,
    "prefix_cache_blocks": int,
}
# Prefill/decode disaggregation: the pools of a dummy-core run, and the KV transfer between
# them (llmlib.model.simulator.KVTransfer; the simulator's --kv_transfer takes the same keys).
PD_FLAGS: dict[str, type] = {"prefill": int, "decode": int}
KV_TRANSFER_FLAGS: dict[str, type] = {"base_us": float, "per_token_ns": float}
# vLLM engine arguments (AsyncEngineArgs) that the vllm core passes through.
VLLM_ENGINE_FLAGS: dict[str, type] = {
    "model": str,
    "tokenizer": str,
    "dtype": str,
    "max_model_len": int,
    "enforce_eager": bool,
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "gpu_memory_utilization": float,
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "enable_prefix_caching": bool,
    "enable_chunked_prefill": bool,
    "kv_cache_dtype": str,
    "quantization": str,
    "seed": int,
}
