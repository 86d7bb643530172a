"""``harness search --search_algorithm=loadgen``: LoadGen's own FindPeakPerformance in one
child test, each of its probes as long as the harness's, for comparison with the harness's
search (``harness.run.search``)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from harness.run.driver import run_child
from harness.run.search import Probe
from llmlib.config.settings import Config, resolve


def loadgen_peak(flags: dict[str, str], cfg: Config, own: dict[str, str], root: Path,
                 say: Any) -> tuple[list[Probe], float]:  # fmt: skip
    """LoadGen's FindPeakPerformance (from the start: double until a run fails, then bisect,
    every probe a whole run judged by LoadGen alone) in one child test; its answer."""
    start = float(own["search_start"] or cfg.server_target_qps)
    n = int(float(own["search_probe_queries"]))
    ms = int(float(own["search_probe_ms"]))
    explicit = {"server_target_qps": start, "min_duration": ms, "min_query_count": n,
                "performance_sample_count": n, "warmup_queries": 0}  # fmt: skip
    one = resolve(flags, benchmark=cfg.benchmark, scenario="server", explicit=explicit)
    run_dir = root / "loadgen-findpeak"
    t0 = time.monotonic()
    s = run_child(one, "FindPeakPerformance", run_dir)
    wall = time.monotonic() - t0
    detail = run_dir / "mlperf_log_detail.txt"
    text = detail.read_text() if detail.is_file() else ""
    found = re.search(r"Found peak performance field: ([0-9.]+)", text)
    runs = 1 + len(re.findall(r"FindBoundaries: Checking|BinarySearch: Testing", text))
    peak = float(found.group(1)) if found else 0.0
    lg, h = (s or {}).get("loadgen") or {}, (s or {}).get("harness") or {}
    why = "" if found else f"LoadGen found no peak (the start {start:g} QPS must hold first)"
    p = Probe("loadgen", peak, bool(found), (s or {}).get("validity", "ERROR"),
              int(h.get("failed") or 0), float(lg.get("samples_per_second") or 0.0), 0.0,
              0.0, 0.0, wall, str(run_dir), why, runs)  # fmt: skip
    print(f"LoadGen FindPeakPerformance from {start:g} QPS: {peak:g} QPS after {runs} runs "
          f"({wall:.0f} s){'; ' + why if why else ''}", flush=True)  # fmt: skip
    return [p], peak
