"""The request log's files: one Parquet file per block (zstd), written once the block is
sealed, read back for the report; ``requests.csv``, the same rows as text; and pyarrow
warmed before a test (its first use costs the process ~100 MB of RSS once: better before
the test than in the middle of it)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

INT_COLUMNS = ("qid", "sample", "issue_ns", "first_ns", "final_ns", "n_tokens", "core")
COLUMNS = (*INT_COLUMNS, "error", "tokens_before_failure")


def write_part(columns: dict[str, np.ndarray], path: Path | Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # (dictionary encoding only for the error column: on the int columns, whose values are
    # mostly distinct, it cost ~20 MB of RSS for nothing; measured)
    pq.write_table(pa.table({c: pa.array(v) for c, v in columns.items()}), path,
                   compression="zstd", use_dictionary=["error"])  # fmt: skip


def warm_arrow(rows: int) -> None:
    """Import pyarrow and write one block's worth to memory, on the thread that will write
    the blocks, before the test starts: pyarrow's first use costs a process ~100 MB of RSS
    once (its libraries, lazy initialization) and a thread ~10 MB (its allocator arena), both
    measured, which would otherwise show as steps in the middle of the test at the first
    spill. The system allocator, not pyarrow's mimalloc, which keeps arenas (~20 MB more
    after 20 writes; measured)."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    col = np.arange(rows, dtype=np.int64) * 1_000_003  # (distinct values, as real rows have)
    block = {c: col for c in INT_COLUMNS} | {
        "error": np.full(rows, "", object),
        "tokens_before_failure": col,
    }
    write_part(block, pa.BufferOutputStream())


def read_part(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out = {c: table.column(c).to_numpy() for c in INT_COLUMNS + ("tokens_before_failure",)}
    out["error"] = np.asarray(table.column("error").to_pylist(), dtype=object)
    return out


CSV_HEADER = ["query_id", "sample_index", "core", "issue_ms", "ttft_ms", "latency_ms",
              "tpot_ms", "n_tokens", "error", "tokens_before_failure"]  # fmt: skip


def write_csv(t: dict[str, np.ndarray], path: str | Path, origin_ns: int = 0) -> dict[str, int]:
    """``requests.csv`` from the log's columns (``RequestLog.table``); the counts it holds."""
    err = t["error"].tolist()
    counts = {"issued": len(err), "completed": 0, "failed": 0}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_HEADER)
        rows = zip(
            *(t[c].tolist() for c in ("qid", "sample", "core", "issue_ns", "first_ns",
                                      "final_ns", "n_tokens", "tokens_before_failure")),
            err,
            strict=True,
        )  # fmt: skip
        for qid, sample, core, iss, first, fin, n, partial, e in rows:
            ttft = (first - iss) / 1e6 if first else ""
            lat = (fin - iss) / 1e6 if fin else ""
            tpot = (fin - first) / (n - 1) / 1e6 if first and fin and n > 1 else ""
            if e:
                counts["failed"] += 1
            elif fin:
                counts["completed"] += 1
            w.writerow(
                [qid, sample, core, f"{(iss - origin_ns) / 1e6:.3f}", _fmt(ttft),
                 _fmt(lat), _fmt(tpot), n, e, partial if e else ""]
            )  # fmt: skip
    return counts


def _fmt(v: float | str) -> str:
    return v if isinstance(v, str) else f"{v:.3f}"
