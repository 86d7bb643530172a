"""Benchmarks and the datasets behind the QSL.

A benchmark is ``configs/benchmarks/<name>.yaml``: its ``benchmark`` section names the
LoadGen model (for mlperf.conf), the output cap, EOS/BOS ids, the family of its published
dataset (which columns its files have and how it is scored), the compliance tests a
submission runs, and the shape of a seeded synthetic workload (with where that shape comes
from); ``settings`` / ``scenarios`` hold field defaults (see ``llmlib.config.settings``).
Latency limits and sample counts are not written here: LoadGen's mlperf.conf has them.

``Dataset`` is the interface the QSL reads: per sample, input token ids, and where known
the reference output length and tokens.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmlib.errors import ConfigError, UnknownNameError
from llmlib.serving.request import LLMRequest, RequestBatch


@dataclass(frozen=True)
class LengthDist:
    """Lognormal lengths with the given mean, clipped to [min, max]."""

    mean: float
    sigma: float = 0.0
    min: int = 1
    max: int = 1 << 20

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.sigma <= 0:
            raw = np.full(n, self.mean)
        else:
            mu = math.log(self.mean) - self.sigma**2 / 2
            raw = rng.lognormal(mu, self.sigma, n)
        return np.clip(np.rint(raw), self.min, self.max).astype(np.int64)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    mlperf_model: str
    max_new_tokens: int
    eos_id: int
    samples: int  # 0: mlperf.conf's performance sample count (see ``synthetic_samples``)
    input_len: LengthDist
    output_len: LengthDist
    description: str = ""
    bos_id: int | None = None
    family: str = ""  # the published dataset's family (columns, scorer); default: the name
    compliance: tuple[str, ...] = ("TEST06",)  # what a SubmissionRun runs
    shape_source: str = ""  # where the synthetic lengths come from
    accuracy_max_new_tokens: int = 0  # an accuracy run's output cap when not max_new_tokens
    extra: dict[str, Any] = field(default_factory=dict)

    def for_mode(self, mode: str, compliance: str | None = None) -> BenchmarkSpec:
        """The spec an accuracy run uses: its own output cap where the benchmark has one
        (gpt-oss-120b: 32,768 for accuracy, 10,240 for performance and compliance runs)."""
        if mode == "AccuracyOnly" and not compliance and self.accuracy_max_new_tokens:
            return dataclasses.replace(self, max_new_tokens=self.accuracy_max_new_tokens)
        return self

    def synthetic_samples(self) -> int:
        """Samples in the synthetic stand-in: the YAML's, else mlperf.conf's performance
        sample count for the model (the dataset's size)."""
        if self.samples:
            return self.samples
        from llmlib.eval.rules import official_settings

        return int(
            official_settings(self.mlperf_model, "Offline")["performance_sample_count_override"]
        )


def load_benchmark(config_dir: str | Path, name: str) -> BenchmarkSpec:
    path = Path(config_dir) / "benchmarks" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (Path(config_dir) / "benchmarks").glob("*.yaml"))
        raise UnknownNameError("benchmark", name, names)
    b = (yaml.safe_load(path.read_text()) or {}).get("benchmark")
    if not isinstance(b, dict):
        raise ConfigError(f"{path}: missing the 'benchmark' section")
    try:
        syn = b["synthetic"]
        bos = b.get("bos_id")
        return BenchmarkSpec(
            name=name,
            mlperf_model=b["mlperf_model"],
            max_new_tokens=int(b["max_new_tokens"]),
            eos_id=int(b.get("eos_id", 2)),
            samples=int(syn.get("samples", 0)),
            input_len=LengthDist(**syn["input_len"]),
            output_len=LengthDist(**syn["output_len"]),
            description=str(b.get("description", "")),
            bos_id=None if bos is None else int(bos),
            family=str(b.get("family", name)),
            compliance=tuple(str(t).upper() for t in b.get("compliance", ["TEST06"])),
            shape_source=str(syn.get("source", "")),
            accuracy_max_new_tokens=int(b.get("accuracy_max_new_tokens", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: bad 'benchmark' section: {exc}") from None


class Dataset:
    """What the QSL serves. Subclasses fill the arrays; access is by sample index."""

    name = "dataset"

    def __init__(
        self,
        input_ids: np.ndarray,
        offsets: np.ndarray,
        output_lens: np.ndarray | None,
        max_new_tokens: int,
    ) -> None:
        self._ids, self._off = input_ids, offsets
        self._out = output_lens
        self.max_new_tokens = max_new_tokens

    def __len__(self) -> int:
        return len(self._off) - 1

    def input_tokens(self, i: int) -> np.ndarray:
        return self._ids[self._off[i] : self._off[i + 1]]

    def input_len(self, i: int) -> int:
        return int(self._off[i + 1] - self._off[i])

    def output_len(self, i: int) -> int | None:
        return None if self._out is None else int(self._out[i])

    def reference_tokens(self, i: int) -> np.ndarray | None:
        return None


class SyntheticDataset(Dataset):
    """Seeded synthetic prompts shaped like a benchmark: token ids uniform over the
    vocabulary (above the special ids), lengths from the benchmark's distributions."""

    name = "synthetic"

    def __init__(self, spec: BenchmarkSpec, seed: int, vocab_size: int, count: int = 0) -> None:
        n = count or spec.synthetic_samples()
        rng = np.random.default_rng([seed, 0x5EED])
        in_lens = spec.input_len.sample(rng, n)
        out_lens = np.minimum(spec.output_len.sample(rng, n), spec.max_new_tokens)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(in_lens, out=offsets[1:])
        ids = rng.integers(3, vocab_size, int(offsets[-1]), dtype=np.uint32)
        super().__init__(ids, offsets, out_lens, spec.max_new_tokens)


class RequestBuilder:
    """Builds ``LLMRequest``s (and ``RequestBatch``es) for sample indices of a dataset.
    Per-sample fields (prompt token view, reference output length and tokens) are looked
    up once, up front, so the request path only indexes lists (``inputs``, ``out_lens``,
    ``refs``: also what a core answering a RequestBatch's columns reads)."""

    def __init__(self, dataset: Dataset, stream: bool) -> None:
        n = len(dataset)
        self.stream = stream
        self.max_new_tokens = dataset.max_new_tokens
        self.inputs = [dataset.input_tokens(i) for i in range(n)]
        self.out_lens = [dataset.output_len(i) for i in range(n)]
        self.refs = [dataset.reference_tokens(i) for i in range(n)]

    def one(self, request_id: int, index: int, issue_ns: int) -> LLMRequest:
        """The request for sample ``index`` with id ``request_id``."""
        return LLMRequest(
            request_id,
            index,
            self.inputs[index],
            self.max_new_tokens,
            self.stream,
            self.out_lens[index],
            self.refs[index],
            issue_ns,
        )

    def build(self, ids: Sequence[int], indices: Sequence[int], issue_ns: int) -> list[LLMRequest]:
        """One request per (request id, sample index), all stamped ``issue_ns``."""
        return [self.one(q, i, issue_ns) for q, i in zip(ids, indices, strict=True)]

    def batch_from_queries(self, queries: Sequence[Any], issue_ns: int) -> RequestBatch:
        """A batch of one request per query object with ``id`` and ``index`` (LoadGen's
        QuerySample), each attribute read once (they are slow pybind properties): the
        Offline hot path."""
        ids: list[int] = []
        idx: list[int] = []
        add_id, add_idx = ids.append, idx.append
        for q in queries:
            add_id(q.id)
            add_idx(q.index)
        return RequestBatch(ids, idx, issue_ns, self)
