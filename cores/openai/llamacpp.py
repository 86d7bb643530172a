"""llama.cpp's native ``/completion`` for the endpoint client: the request body (token ids
in, ``return_tokens`` for ids out, greedy) and the checks of what comes back. The stream's
events are read by ``cores.openai.stream.Stream.feed_native``."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

import numpy as np

from llmlib.serving.async_core import RequestFailed

OWNER = "llamacpp"  # what llama.cpp's server says of its models in /v1/models (owned_by)


def model_owners(models: Any) -> set[str]:
    """The ``owned_by`` of every model in a ``/v1/models`` answer's ``data`` (anything
    else: none)."""
    if not isinstance(models, list):
        return set()
    return {str(m["owned_by"]) for m in models if isinstance(m, dict) and m.get("owned_by")}


def native_body(prompt: np.ndarray, max_new_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "prompt": prompt.tolist(),
        "n_predict": int(max_new_tokens),
        "temperature": 0.0,
        # greedy as one top-k of 1: llama.cpp's default chain (penalties, DRY, top-k 40,
        # top-p, min-p, ...) runs on the server's one CPU loop for every slot, every step, over
        # the whole vocabulary; with 128 slots of a 128k vocabulary it held an H200 to 1300
        # tokens/s where this asks 3500 (docs/gpu-runs/2026-12-06-h200-llamacpp-sampling)
        "samplers": ["top_k"],
        "top_k": 1,
        "stream": stream,
        "return_tokens": True,
    }


def token_ids(ids: object) -> TypeGuard[list[int]]:
    """Whether ``ids`` is a list of non-negative ints (JSON booleans are not ids)."""
    return isinstance(ids, list) and all(type(i) is int and i >= 0 for i in ids)


def native_ids(raw: bytes, url: str) -> np.ndarray:
    """The token ids of llama.cpp's unstreamed ``/completion`` answer, checked: a JSON
    object that says it stopped, with as many ``tokens`` as ``tokens_predicted``."""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise RequestFailed(f"not JSON from {url}: {raw[:100]!r}") from None
    if not isinstance(obj, dict):
        raise RequestFailed(f"not a JSON object from {url}: {raw[:100]!r}")
    if obj.get("error"):
        raise RequestFailed(f"server error: {obj['error']}")
    ids, n = obj.get("tokens"), obj.get("tokens_predicted")
    if not token_ids(ids):
        raise RequestFailed(f"{url} sent no token ids (a llama.cpp server answers 'tokens')")
    if n is not None and n != len(ids):
        raise RequestFailed(f"{url} sent {len(ids)} token ids but says it generated {n}")
    return np.asarray(ids, dtype=np.uint32)
