"""A Triton Python-backend model with the TensorRT-LLM backend's tensor interface, running
the project's tiny Llama (``llmlib.model.tiny_llama_np``, numpy only) for machines without
TensorRT-LLM, or, with no ``model_dir``, a counting model (no weights: each token is the
last one plus 1, modulo ``vocab_size``, one every ``token_interval_ms``) for measuring
clients against a server that costs next to nothing. ``llmlib.deploy.triton.repo`` copies this
file as ``<repo>/<model>/1/model.py`` with ``tiny_llama_np.py`` beside it; Triton's Python
stub imports it (with ``triton_python_backend_utils``, which exists only inside Triton).

Decoupled: each request runs on a worker thread (``max_concurrency`` of them), sending one
response per token when ``streaming`` is true, else one response with every token, then
the final flag. Inputs: ``input_ids`` [1, L], ``input_lengths`` [1, 1],
``request_output_len`` [1, 1], optional ``end_id``, ``pad_id``, ``streaming``,
``beam_width`` (1 only) and ``stop_words_list`` [1, 2, K] (TensorRT-LLM's flattened words
and offsets). Outputs: ``output_ids`` [1, 1, n] (the prompt excluded) and
``sequence_length`` [1, 1] (n). A request's error is a response with the error and the
final flag (the client knows the request by the response's id, as with TensorRT-LLM's
backend, whose messages do not name it). A cancelled request stops at the next token.

For the fault suite, the counting model takes ``fault`` and ``fault_every`` parameters:
every ``fault_every``-th request ``error``s at once, sends its first token and then an error
(``error_after_first``), sends its first token and then nothing (``stall``), ends with no
token (``zero_tokens``), or is never answered (``silent``) until cancelled.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def _stop_words(arr: Any) -> list[list[int]]:
    """TensorRT-LLM's stop_words_list [1, 2, K]: flat ids, then end offsets (-1 padded)."""
    if arr is None:
        return []
    flat, offsets = arr.reshape(2, -1)
    words, start = [], 0
    for end in offsets:
        if end < 0:
            break
        words.append([int(t) for t in flat[start:end]])
        start = int(end)
    return [w for w in words if w]


class CountingModel:
    """No weights: each token is the previous one + 1 (modulo the vocabulary), the first
    one the prompt's last + 1; ``interval_s`` apart (a sleep: it holds no CPU)."""

    def __init__(self, vocab_size: int, interval_s: float) -> None:
        self.vocab, self.interval_s = vocab_size, interval_s

    def generate(self, prompt: Any, max_new_tokens: int, end_id: int | None = None) -> Any:
        token = int(prompt[-1])
        for _ in range(max_new_tokens):
            if self.interval_s:
                time.sleep(self.interval_s)
            token = (token + 1) % self.vocab
            yield token
            if token == end_id:
                return


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton

        self.pb = pb_utils
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        if params.get("model_dir"):
            # tiny_llama_np.py is copied beside this file (the stub ignores PYTHONPATH)
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from tiny_llama_np import TinyLlama  # type: ignore[import-not-found]

            self.model: Any = TinyLlama(params["model_dir"])
        else:
            interval = float(params.get("token_interval_ms", "0")) / 1e3
            self.model = CountingModel(int(params.get("vocab_size", "32000")), interval)
        self.pool = ThreadPoolExecutor(int(params.get("max_concurrency", "8")))
        self.fault = params.get("fault", "")
        self.fault_every = int(params.get("fault_every", "0") or 0)
        self._count = itertools.count(1)  # (next() is atomic)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self.pool.submit(self._run, request)
        return None

    def _input(self, request: Any, name: str) -> Any:
        t = self.pb.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy()

    def _run(self, request: Any) -> None:
        pb = self.pb
        sender = request.get_response_sender()
        try:
            ids = self._input(request, "input_ids").reshape(-1)
            lengths = self._input(request, "input_lengths")
            if lengths is not None:
                ids = ids[: int(lengths.reshape(-1)[0])]
            out_len = int(self._input(request, "request_output_len").reshape(-1)[0])
            end = self._input(request, "end_id")
            end_id = None if end is None else int(end.reshape(-1)[0])
            stream = self._input(request, "streaming")
            streaming = bool(stream is not None and stream.reshape(-1)[0])
            beam = self._input(request, "beam_width")
            if beam is not None and int(beam.reshape(-1)[0]) != 1:
                raise ValueError("beam_width must be 1 (greedy)")
            stops = _stop_words(self._input(request, "stop_words_list"))
            if out_len < 1:
                raise ValueError(f"request_output_len must be at least 1, not {out_len}")
            n = next(self._count)
            fault = self.fault if self.fault_every and n % self.fault_every == 0 else ""
            if fault and self._inject(fault, sender, ids):
                return
            tokens: list[int] = []
            for tok in self.model.generate(ids, out_len, end_id):
                if sender.is_cancelled():
                    sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    return
                tokens.append(tok)
                if streaming:
                    sender.send(self._response([tok]))
                if any(tokens[-len(w) :] == w for w in stops):
                    break
            if streaming:
                sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                sender.send(self._response(tokens), flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the request's error goes back to its client
            err = pb.TritonError(str(exc))
            final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            sender.send(pb.InferenceResponse(error=err), flags=final)

    def _inject(self, fault: str, sender: Any, ids: Any) -> bool:
        """Misbehave for the fault suite; True when the request is done with."""
        pb = self.pb
        if fault == "error":
            raise RuntimeError("injected error")
        if fault == "zero_tokens":
            sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return True
        if fault in ("error_after_first", "stall"):
            sender.send(self._response([(int(ids[-1]) + 1) % self.model.vocab]))
            if fault == "error_after_first":
                raise RuntimeError("injected error after the first token")
        if fault in ("stall", "silent"):
            while not sender.is_cancelled():
                time.sleep(0.05)
            sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return True
        return False

    def _response(self, tokens: list[int]) -> Any:
        pb = self.pb
        ids = np.array(tokens, dtype=np.int32).reshape(1, 1, -1)
        n = np.array([[len(tokens)]], dtype=np.int32)
        return pb.InferenceResponse(
            output_tensors=[pb.Tensor("output_ids", ids), pb.Tensor("sequence_length", n)]
        )

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
