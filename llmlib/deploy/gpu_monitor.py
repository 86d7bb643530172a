"""GPU facts and samples over a test, through NVML (``nvidia-ml-py``, module ``pynvml``), on
a side thread: never on the request path.

``GpuMonitor`` is a context manager around a test. On entry it reads each GPU's facts (name,
memory, driver, maximum SM clock) and starts a daemon thread that samples, every
``interval_s``, each GPU's utilisation (SM and memory), memory used, SM clock and power;
on exit it stops the thread and writes the samples as CSV. Where NVML cannot be loaded (no
``pynvml``, no driver, no GPU) it does nothing and ``summary()`` is None: a CPU machine's
runs are unchanged. A sampling error stops the sampling, never the test.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FIELDS = ("t_s", "gpu", "util_pct", "mem_util_pct", "mem_used_mib", "sm_clock_mhz", "power_w")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class GpuMonitor:
    def __init__(self, interval_s: float, csv_path: Path | None = None, nvml: Any = None) -> None:
        self.interval_s = interval_s
        self.csv_path = csv_path
        self._nvml = nvml  # for tests: an object with pynvml's functions
        self.facts: list[dict[str, Any]] = []
        self.samples: list[tuple[float, ...]] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> GpuMonitor:
        if self.interval_s <= 0:
            return self
        nv = self._nvml
        if nv is None:
            try:
                import pynvml
            except ImportError:
                return self
            nv = pynvml
        try:
            nv.nvmlInit()
            n = nv.nvmlDeviceGetCount()
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
            driver = _text(nv.nvmlSystemGetDriverVersion())
            for i, h in enumerate(self._handles):
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                self.facts.append(
                    {
                        "gpu": i,
                        "name": _text(nv.nvmlDeviceGetName(h)),
                        "memory_mib": int(mem.total) // (1 << 20),
                        "driver": driver,
                        "max_sm_clock_mhz": int(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
                    }
                )
        except Exception as exc:  # no driver, no GPU: nothing to watch
            log.info("NVML unavailable: %r", exc)
            self.facts, self._handles = [], []
            return self
        self._nv = nv
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nv = self._nv
        while not self._stop.is_set():
            t = time.monotonic() - self.t0
            try:
                for i, h in enumerate(self._handles):
                    util = nv.nvmlDeviceGetUtilizationRates(h)
                    mem = nv.nvmlDeviceGetMemoryInfo(h)
                    clock = nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
                    try:
                        power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
                    except Exception:  # not every board reports power
                        power = float("nan")
                    self.samples.append(
                        (
                            round(t, 3),
                            i,
                            float(util.gpu),
                            float(util.memory),
                            int(mem.used) // (1 << 20),
                            float(clock),
                            power,
                        )
                    )
            except Exception as exc:
                self.error = f"GPU sampling stopped: {exc!r}"
                log.warning(self.error)
                return
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # a driver going away at the end is no error
            self._nv.nvmlShutdown()
        if self.csv_path is not None and self.samples:
            with open(self.csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(FIELDS)
                w.writerows(self.samples)

    def summary(self) -> dict[str, Any] | None:
        """Each GPU's facts with its utilisation and memory over the test (p50, max)."""
        if not self.facts:
            return None
        out = []
        a = np.array(self.samples, dtype=np.float64).reshape(-1, len(FIELDS))
        for f in self.facts:
            rows = a[a[:, 1] == f["gpu"]]
            entry = dict(f, samples=len(rows))
            if len(rows):
                for k, col in (
                    ("util_pct", 2),
                    ("mem_used_mib", 4),
                    ("sm_clock_mhz", 5),
                    ("power_w", 6),
                ):
                    v = rows[:, col]
                    v = v[np.isfinite(v)]
                    if len(v):
                        entry[k] = {"p50": float(np.median(v)), "max": float(v.max())}
            out.append(entry)
        return {"interval_s": self.interval_s, "gpus": out, "error": self.error or None}

    def note(self) -> str | None:
        """One line for report.md."""
        s = self.summary()
        if s is None:
            return None
        parts = []
        for g in s["gpus"]:
            line = (
                f"GPU {g['gpu']}: {g['name']}, {g['memory_mib']} MiB, driver {g['driver']}, "
                f"max SM clock {g['max_sm_clock_mhz']} MHz"
            )
            if "util_pct" in g:
                u, m = g["util_pct"], g["mem_used_mib"]
                line += (
                    f"; over the test: utilisation p50 {u['p50']:.0f}% max {u['max']:.0f}%, "
                    f"memory used max {m['max']:.0f} MiB ({g['samples']} samples)"
                )
            parts.append(line)
        return "; ".join(parts) + (f" ({s['error']})" if s["error"] else "")
