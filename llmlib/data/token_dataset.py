"""``TokenDataset``: a dataset held as token ids (prompts, reference answers, kept fields),
what every loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmlib.data.benchmarks import Dataset
from llmlib.errors import ConfigError


class TokenDataset(Dataset):
    """Samples given as token id sequences, with optional reference outputs and per-sample
    fields (what scorers need: ground truth, metric, source dataset)."""

    def __init__(
        self,
        inputs: Sequence[Sequence[int] | np.ndarray],
        max_new_tokens: int,
        references: Sequence[Sequence[int] | np.ndarray | None] | None = None,
        fields: Sequence[dict[str, Any]] | None = None,
        name: str = "tokens",
        source: str = "",
    ) -> None:
        where = source or name
        if not len(inputs):
            raise ConfigError(f"{where}: no samples")
        arrays = [_ids(x, where, i, "input") for i, x in enumerate(inputs)]
        for i, a in enumerate(arrays):
            if len(a) == 0:
                raise ConfigError(f"{where}: sample {i} has an empty prompt")
        lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        refs: list[np.ndarray | None] | None = None
        out_lens = None
        if references is not None:
            if len(references) != len(arrays):
                raise ConfigError(f"{where}: {len(references)} references, {len(arrays)} inputs")
            refs = [
                None if r is None else _ids(r, where, i, "reference")
                for i, r in enumerate(references)
            ]
            have = [r for r in refs if r is not None]
            if len(have) == len(refs):
                out_lens = np.array([min(len(r), max_new_tokens) for r in have], dtype=np.int64)
        super().__init__(np.concatenate(arrays), offsets, out_lens, max_new_tokens)
        self._refs = refs
        self.fields = list(fields) if fields is not None else [{} for _ in arrays]
        self.name = name
        self.source = source
        self.from_cache = False
        self.notes: list[str] = []  # things the report should say about the data
        self.columns: list[str] = []  # a table's columns, for messages naming what it has

    def head(self, n: int) -> TokenDataset:
        """The first ``n`` samples."""
        refs = None if self._refs is None else self._refs[:n]
        ds = TokenDataset(
            [self.input_tokens(i) for i in range(n)],
            self.max_new_tokens,
            refs,
            self.fields[:n],
            self.name,
            self.source,
        )
        ds.from_cache = self.from_cache
        ds.columns = self.columns
        ds.notes = [*self.notes, f"first {n} of {len(self)} samples"]
        return ds

    def reference_tokens(self, i: int) -> np.ndarray | None:
        return None if self._refs is None else self._refs[i]


def _ids(x: Any, where: str, i: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: sample {i}: {what} token ids are not a sequence ({exc})"
        ) from None
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ConfigError(f"{where}: sample {i}: {what} must be a flat list of integer token ids")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(np.uint32).max):
        raise ConfigError(f"{where}: sample {i}: {what} token id out of range")
    return a.astype(np.uint32)
