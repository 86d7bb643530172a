"""A tqdm progress bar fed by a monitor thread (never by the request path): completed
samples out of issued, tokens/s, recent p99 TTFT and TPOT, and optionally steady-state
tokens/s (over the last 10 s). The thread runs with the bar off too: it folds the request
log every interval, so what the request path appends never piles up (and the log's
finished blocks are spilled) whether or not anyone watches."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from tqdm import tqdm

from llmlib.serving.request_log import RequestLog


class Progress:
    def __init__(
        self,
        log: RequestLog,
        label: str,
        interval_s: float = 0.5,
        steady_state: bool = False,
        enabled: bool = True,
    ) -> None:
        self.log, self.label, self.interval = log, label, interval_s
        self.steady = steady_state
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window: deque[tuple[float, int]] = deque()

    def __enter__(self) -> Progress:
        target = self._run if self.enabled else self._fold
        self._thread = threading.Thread(target=target, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        t0 = time.monotonic()
        with tqdm(desc=self.label, unit="sample", dynamic_ncols=True, leave=True) as bar:
            while True:
                stopping = self._stop.wait(self.interval)
                self._refresh(bar, time.monotonic() - t0)
                if stopping:
                    return

    def _fold(self) -> None:
        while not self._stop.wait(self.interval):
            self.log.sync()

    def _refresh(self, bar: tqdm, elapsed: float) -> None:
        log = self.log
        done = log.completed + log.failed
        bar.total = max(len(log), done)
        bar.n = done
        post = {"tok/s": f"{log.tokens / max(elapsed, 1e-9):,.0f}"}
        ttft, tpot = log.recent_latencies()
        if len(ttft):
            post["p99 TTFT ms"] = f"{np.percentile(ttft, 99) / 1e6:.1f}"
        if len(tpot):
            post["p99 TPOT ms"] = f"{np.percentile(tpot, 99) / 1e6:.2f}"
        if self.steady:
            now = time.monotonic()
            self._window.append((now, log.tokens))
            while self._window and now - self._window[0][0] > 10.0:
                self._window.popleft()
            t_old, tok_old = self._window[0]
            if now > t_old:
                post["steady tok/s"] = f"{(log.tokens - tok_old) / (now - t_old):,.0f}"
        if log.failed:
            post["failed"] = str(log.failed)
        bar.set_postfix(post, refresh=False)
        bar.refresh()
