"""Per-request records and the statistics reports are made of. Times are perf_counter_ns."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.serving.log_files import (
    COLUMNS,
    INT_COLUMNS,
    read_part,
    warm_arrow,
    write_csv,
    write_part,
)
from llmlib.serving.request import LLMRequest, LLMResponse, RequestBatch, ResponseBatch

log = logging.getLogger(__name__)
BLOCK_ROWS = 1 << 15  # requests per block (int64 columns: ~1.8 MB in memory)


class _Block:
    """``BLOCK_ROWS`` consecutive requests (in issue order) as int64 columns; errors and
    the tokens a failed request had received are sparse (by row offset)."""

    __slots__ = ("cols", "errors", "partial", "filled", "open")

    def __init__(self) -> None:
        self.cols = {c: np.zeros(BLOCK_ROWS, np.int64) for c in INT_COLUMNS}
        self.errors: dict[int, str] = {}
        self.partial: dict[int, int] = {}
        self.filled = 0  # rows issued into this block
        self.open = 0  # of those, rows not final yet

    def table(self) -> dict[str, np.ndarray]:
        n = self.filled
        out = {c: a[:n] for c, a in self.cols.items()}
        err = np.full(n, "", dtype=object)
        part = np.zeros(n, np.int64)
        for off, e in self.errors.items():
            err[off] = e
        for off, k in self.partial.items():
            part[off] = k
        out["error"], out["tokens_before_failure"] = err, part
        return out


class RequestLog:
    """What happened to each issued request: when issued, first token, final, tokens, core,
    error; in issue order.

    The request path only appends the request and response objects it already has (one
    ``list.extend`` each, or one ``append`` of a batch, atomic under the GIL, no lock);
    ``sync()`` folds them into columns, off the request path (the progress thread, which
    runs whether or not a bar is shown, and any reader). Columns live in blocks of
    ``BLOCK_ROWS`` rows (int64, ~60 bytes a request); a block whose requests are all final
    is *sealed*: with ``spill_dir`` it is written there as one Parquet file and leaves
    memory, so a Server run of any length holds only the blocks with requests in flight;
    without, it stays in memory. ``finish()`` writes the rest: ``spill_dir`` then holds the
    whole log (``part-NNNNNN.parquet``, block order).

    Blocks are written by the log's own writer thread, never by a folding reader: a fold
    can happen on the request path (``has_first``, on a failure), and a Parquet write takes
    milliseconds. One thread also pays pyarrow's per-thread costs once (its allocator arena
    grew ~10 MB at its first write, measured), warmed when the log is made, before the
    test. A block a write failed on (a full disk) stays in memory: nothing is lost, and
    ``spill_errors`` says so."""

    def __init__(self, spill_dir: str | Path | None = None) -> None:
        self._issued: list[LLMRequest | RequestBatch] = []
        self._responses: list[LLMResponse | ResponseBatch] = []
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._blocks: dict[int, _Block] = {}  # in memory, by block number
        self._spilled: list[int] = []  # block numbers written to spill_dir
        self._last_sealed: tuple[int, _Block] | None = None  # (for recent latencies)
        self._index: dict[int, int] = {}  # open request id -> row
        self._rows = 0
        self._completed = 0
        self._failed = 0
        self._failed_after_first = 0
        self._tokens = 0
        self._finished = False
        self._open_first: dict[int, bool] = {}  # after finish: open request -> had a first
        self._version = 0
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        self._lock = threading.Lock()
        self.spill_errors: list[str] = []
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        if spill_dir is not None:
            self._writer = threading.Thread(target=self._write_loop, name="request-log-writer",
                                            daemon=True)  # fmt: skip
            self._writer.start()

    def _write_loop(self) -> None:
        """The writer thread: warm pyarrow, then write each sealed block it is given."""
        warm_arrow(BLOCK_ROWS)
        while (k := self._queue.get()) is not None:
            try:
                self._spill(k)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def drain(self) -> None:
        """Wait until every sealed block handed to the writer is written (or failed)."""
        if self._writer is not None:
            self._queue.join()

    # --- the request path: appends only ---------------------------------------------------
    def on_issue(self, requests: Sequence[LLMRequest]) -> None:
        if type(requests) is RequestBatch:
            self._issued.append(requests)
        else:
            self._issued.extend(requests)

    def on_responses(self, responses: Iterable[LLMResponse] | ResponseBatch) -> None:
        if isinstance(responses, ResponseBatch):  # (one call per batch or Server response)
            self._responses.append(responses)
        else:
            self._responses.extend(responses)

    # --- folding into columns -------------------------------------------------------------
    def sync(self) -> None:
        """Fold what the request path appended into the columns (requests first, so every
        response finds its row); seal (and spill) blocks whose requests are all final."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """The body of ``sync``; the caller holds the lock."""
        if self._finished:
            return
        issued, responses = self._issued, self._responses
        # count responses before requests: a request is appended before it is sent, so
        # every response counted here finds its request among those folded below
        n_resp = len(responses)
        n = len(issued)
        if n:
            taken = issued[:n]
            del issued[:n]  # only this (locked) side removes; appends land after
            qids: list[int] = []
            samples: list[int] = []
            issue_ns: list[int] = []
            for x in taken:
                if isinstance(x, RequestBatch):
                    qids += x.request_ids
                    samples += x.sample_indices
                    issue_ns += [x.issue_ns] * len(x.request_ids)
                else:
                    qids.append(x.request_id)
                    samples.append(x.sample_index)
                    issue_ns.append(x.issue_ns)
            self._add_rows(qids, samples, issue_ns)
        if n_resp:
            done = responses[:n_resp]
            del responses[:n_resp]
            self._record(done)
        if n or n_resp:
            self._version += 1

    def _add_rows(self, qids: list[int], samples: list[int], issue_ns: list[int]) -> None:
        n, pos = len(qids), 0
        while pos < n:
            k, off = divmod(self._rows, BLOCK_ROWS)
            blk = self._blocks.get(k)
            if blk is None:
                blk = self._blocks[k] = _Block()
            m = min(n - pos, BLOCK_ROWS - off)
            part = slice(pos, pos + m)
            blk.cols["qid"][off : off + m] = qids[part]
            blk.cols["sample"][off : off + m] = samples[part]
            blk.cols["issue_ns"][off : off + m] = issue_ns[part]
            blk.filled, blk.open = off + m, blk.open + m
            self._index.update(zip(qids[part], range(self._rows, self._rows + m), strict=True))
            self._rows += m
            pos += m

    def _record(self, responses: Iterable[LLMResponse | ResponseBatch]) -> None:
        """Sort the responses into first tokens, successes and failures (a pass in Python
        over the objects), then write each kind into the blocks in one go per block."""
        index = self._index
        f_rows: list[int] = []
        f_ts: list[int] = []
        rows: list[int] = []
        ts: list[int] = []
        cores: list[int] = []
        ntok: list[int] = []
        failures: list[tuple[int, LLMResponse]] = []
        batches: list[tuple[np.ndarray, dict[str, Any]]] = []
        for r in responses:
            if isinstance(r, ResponseBatch):  # (its columns go in as they are)
                at = [index.pop(q, None) for q in r.request_ids]
                lens = [len(o) for o in r.outputs]
                if None in at:  # (answers for unknown or finished requests: rare)
                    lens = [n for i, n in zip(at, lens, strict=True) if i is not None]
                    at = [i for i in at if i is not None]
                if at:
                    cols: dict[str, Any] = {"final_ns": r.time_ns, "core": r.core_id,
                                            "n_tokens": lens}  # fmt: skip
                    batches.append((np.asarray(at, dtype=np.int64), cols))
                continue
            i = index.get(r.request_id)
            if i is None:
                continue
            if not r.is_final:
                f_rows.append(i)
                f_ts.append(r.time_ns)
                continue
            del index[r.request_id]
            if r.error is not None:
                failures.append((i, r))
            else:
                rows.append(i)
                ts.append(r.time_ns)
                cores.append(r.core_id)
                ntok.append(len(r.output_tokens))
        if f_rows:  # a request's first first token wins
            uniq, first = np.unique(np.asarray(f_rows), return_index=True)
            self._put(uniq, {"first_ns": np.asarray(f_ts)[first]}, only_unset=True)
        if rows:
            batches.append((np.asarray(rows), {"final_ns": ts, "core": cores, "n_tokens": ntok}))
        for where, what in batches:
            self._put(where, what)
            self._tokens += int(what["n_tokens"].sum())
            self._completed += len(where)
        for i, r in failures:
            k, off = divmod(i, BLOCK_ROWS)
            blk = self._blocks[k]
            blk.cols["final_ns"][off] = r.time_ns
            blk.cols["core"][off] = r.core_id
            blk.errors[off] = r.error or "failed"
            self._failed += 1
            if blk.cols["first_ns"][off]:
                self._failed_after_first += 1
            if len(r.output_tokens):
                blk.partial[off] = len(r.output_tokens)
        closed = [at for at, _ in batches]
        if failures:
            closed.append(np.asarray([i for i, _ in failures]))
        if closed:
            per_block = np.bincount(np.concatenate(closed) // BLOCK_ROWS)
            for k in np.flatnonzero(per_block).tolist():
                self._closed_rows(k, int(per_block[k]))

    def _put(self, rows: np.ndarray, values: dict[str, Any], only_unset: bool = False) -> None:
        """``col[rows] = v`` for each column and its values (a sequence, or one value for
        every row), across blocks (with ``only_unset``: where the column is still 0). The
        values are left as int64 arrays in ``values``."""
        for c, v in values.items():
            values[c] = np.asarray(v, dtype=np.int64)
        vals: dict[str, np.ndarray] = values
        ks = rows // BLOCK_ROWS
        lo, hi = int(ks[0]), int(ks[-1])
        if lo == hi and (ks == lo).all():  # (the usual case: one block)
            groups = [(lo, rows - lo * BLOCK_ROWS, vals)]
        else:
            groups = []
            for k in np.unique(ks).tolist():
                sel = ks == k
                kv = {c: v[sel] if v.ndim else v for c, v in vals.items()}
                groups.append((k, rows[sel] - k * BLOCK_ROWS, kv))
        for k, offs, kv in groups:
            cols = self._blocks[k].cols
            for c, v in kv.items():
                if only_unset:  # (first tokens: one per row, an array)
                    unset = cols[c][offs] == 0
                    cols[c][offs[unset]] = v[unset]
                else:
                    cols[c][offs] = v

    def _closed_rows(self, k: int, m: int) -> None:
        """``m`` requests of block ``k`` are final: seal it when it is full and none is open."""
        blk = self._blocks[k]
        blk.open -= m
        if blk.open == 0 and blk.filled == BLOCK_ROWS:
            self._last_sealed = (k, blk)
            if self._writer is not None:
                self._queue.put(k)  # (it stays readable here until it is written)

    def _spill(self, k: int) -> None:
        """On the writer thread: write sealed block ``k`` (no one writes to it any more, so
        it is read without the lock), then drop it from memory."""
        assert self._spill_dir is not None
        with self._lock:
            blk = self._blocks.get(k)
        if blk is None:
            return
        try:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            write_part(blk.table(), self._part(k))
        except Exception as exc:  # (a full disk, a removed directory: keep it in memory)
            log.exception("request log: block %d could not be written", k)
            self.spill_errors.append(f"block {k}: {exc!r}")
            return
        with self._lock:
            self._blocks.pop(k, None)
            self._spilled.append(k)
            self._version += 1

    def _part(self, k: int) -> Path:
        assert self._spill_dir is not None
        return self._spill_dir / f"part-{k:06d}.parquet"

    def finish(self) -> None:
        """The run is over: fold what is left and, with ``spill_dir``, write every block
        still in memory (requests never answered included, with no final time), so the
        directory holds the whole log. Later responses are ignored."""
        with self._lock:
            self._fold()
            self._finished = True
            # what is still open, with or without its first token (``has_first`` answers
            # from this once the blocks may have left memory)
            self._open_first = {
                q: bool(self._blocks[i // BLOCK_ROWS].cols["first_ns"][i % BLOCK_ROWS])
                for q, i in self._index.items()
            }
            self._index.clear()
            rest = sorted(self._blocks)
        if self._writer is None or self._spill_dir is None:
            return
        for k in rest:  # (the writer takes them in order, after what it already has)
            if k not in self._spilled:
                self._queue.put(k)
        self._queue.put(None)
        self._writer.join()
        self._writer = None
        self._spill_dir.mkdir(parents=True, exist_ok=True)

    # --- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        self.sync()
        return self._rows

    @property
    def completed(self) -> int:
        self.sync()
        return self._completed

    @property
    def failed(self) -> int:
        self.sync()
        return self._failed

    @property
    def tokens(self) -> int:
        self.sync()
        return self._tokens

    def table(self) -> dict[str, np.ndarray]:
        """Every column (``COLUMNS``), one row per issued request in issue order; spilled
        blocks are read back. The same snapshot until something new is folded."""
        with self._lock:
            self._fold()
            if self._cache is not None and self._cache[0] == self._version:
                return self._cache[1]
            parts: list[tuple[int, dict[str, np.ndarray]]] = [
                (k, read_part(self._part(k))) for k in self._spilled
            ]
            parts += [(k, b.table()) for k, b in self._blocks.items()]
            parts.sort(key=lambda kv: kv[0])
            tables = [t for _, t in parts]
            out = {
                c: np.concatenate([t[c] for t in tables])
                if tables
                else np.zeros(0, object if c == "error" else np.int64)
                for c in COLUMNS
            }
            self._cache = (self._version, out)
            return out

    def column(self, name: str) -> list:
        """One per-request column (``COLUMNS``), in issue order."""
        return self.table()[name].tolist()

    def failed_after_first_token(self) -> int:
        """Failed requests that had had their first token (LoadGen got the tokens they had
        received, counted as at least 2; requests.csv: an error with a ttft)."""
        self.sync()
        return self._failed_after_first

    def has_first(self, query_id: int) -> bool:
        """Whether an open (not yet final) request has had its first token recorded."""
        with self._lock:
            self._fold()
            i = self._index.get(query_id)
            if i is None:
                return self._open_first.get(query_id, False)  # (after finish)
            k, off = divmod(i, BLOCK_ROWS)
            return bool(self._blocks[k].cols["first_ns"][off])

    def recent_latencies(self, window: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of up to ``window`` recent finished requests (for progress):
        from the last ``4 * window`` rows in memory."""
        with self._lock:
            self._fold()
            blocks = dict(self._blocks)
            if self._last_sealed is not None:
                blocks.setdefault(*self._last_sealed)
            cols: dict[str, list[np.ndarray]] = {c: [] for c in INT_COLUMNS}
            need = 4 * window
            for k in sorted(blocks, reverse=True):
                if need <= 0:
                    break
                b = blocks[k]
                lo = max(0, b.filled - need)
                for c in ("issue_ns", "first_ns", "final_ns", "n_tokens"):
                    cols[c].insert(0, b.cols[c][lo : b.filled].copy())
                need -= b.filled - lo
        if not cols["issue_ns"]:
            return np.zeros(0, np.int64), np.zeros(0)
        cat = {c: np.concatenate(v) for c, v in cols.items() if v}
        return _ttft_tpot(cat["issue_ns"], cat["first_ns"], cat["final_ns"], cat["n_tokens"],
                          window)  # fmt: skip

    def latencies(self) -> tuple[np.ndarray, np.ndarray]:
        """TTFT and TPOT (ns) of every successful request that has them."""
        t = self.table()
        return _ttft_tpot(t["issue_ns"], t["first_ns"], t["final_ns"], t["n_tokens"], None)

    def total_latencies(self) -> np.ndarray:
        """Issue to final (ns) of every successful request."""
        t = self.table()
        ok = (t["final_ns"] > 0) & (t["n_tokens"] > 0)
        return (t["final_ns"] - t["issue_ns"])[ok]

    def write_csv(self, path: str | Path, origin_ns: int = 0) -> dict[str, int]:
        """``requests.csv``: one row per request, times in ms relative to ``origin_ns``.
        Returns what the rows hold (issued, completed, failed): the same snapshot, while
        requests may still come in (an interrupted run)."""
        return write_csv(self.table(), path, origin_ns)


def _ttft_tpot(
    issue: np.ndarray,
    first: np.ndarray,
    final: np.ndarray,
    ntok: np.ndarray,
    window: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    iss = np.asarray(issue, dtype=np.int64)
    fst = np.asarray(first, dtype=np.int64)
    fin = np.asarray(final, dtype=np.int64)
    n = np.asarray(ntok, dtype=np.int64)
    has_first = fst > 0
    ttft = (fst - iss)[has_first]
    ok = has_first & (fin > 0) & (n > 1)
    tpot = (fin - fst)[ok] / (n[ok] - 1)
    if window is not None:
        ttft, tpot = ttft[-window:], tpot[-window:]
    return ttft, tpot
