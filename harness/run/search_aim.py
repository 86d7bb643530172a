"""Where a capacity search's next probe goes (``harness.run.search``): the Offline bound's
steady rate, each probe's margin to its limits, and the QPS between the highest that held
and the lowest that broke where the margin is predicted to cross zero."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def steady_rate(run_dir: Path) -> float:
    """An Offline run's completions per second while the system was full: between its 10th
    and 60th percentile completion. LoadGen's rate counts to the last completion, and the
    longest answers finish alone at the end (a long tail of output lengths can halve it)."""
    import csv

    path = run_dir / "requests.csv"
    if not path.is_file():
        return 0.0
    with path.open() as f:
        done = sorted(
            float(r["issue_ms"]) + float(r["latency_ms"])
            for r in csv.DictReader(f)
            if r["latency_ms"] and not r["error"]
        )
    if len(done) < 20:
        return 0.0
    a, b = done[len(done) // 10], done[6 * len(done) // 10]
    return (6 * len(done) // 10 - len(done) // 10) / ((b - a) / 1000) if b > a else 0.0


def down(q: float, res: float) -> float:
    """``q`` rounded down to a multiple of the resolution (kept exact in decimal)."""
    digits = max(0, -math.floor(math.log10(res)) + 1)
    return round(math.floor(q / res + 1e-9) * res, digits)


def margin(delivered: float, tolerance: float, lg: dict[str, Any]) -> float | None:
    """How far a Server run was from breaking, as a share: the least of its delivered share
    over ``1 - tolerance`` and its p99 TTFT and TPOT under their limits (1 - p99 / limit).
    Negative where it broke on one of them; None without LoadGen's figures."""
    if not lg or not delivered:
        return None
    out = [delivered - (1 - tolerance)]
    for key, limit in (("ttft_ns", "ttft_limit_ns"), ("tpot_ns", "tpot_limit_ns")):
        p99 = (lg.get(key) or {}).get("p99")
        if lg.get(limit) and p99 is not None:
            out.append(1 - float(p99) / float(lg[limit]))
    return min(out)


def aim(lo: float, hi: float, m_lo: float | None, m_hi: float | None, res: float) -> float:
    """The next QPS between ``lo`` (held, margin ``m_lo``) and ``hi`` (broke, ``m_hi``):
    where the margin crosses zero on the line between them (regula falsi), kept a
    resolution step inside the bracket; the midpoint where either margin is unknown (the
    Offline bound, a run stopped early) or they do not straddle zero (a run that held with
    no room, or broke on something the p99s do not show: LoadGen's early stopping)."""
    mid = (lo + hi) / 2
    if m_lo is None or m_hi is None or not (m_lo >= 0 > m_hi) or hi - lo <= 2 * res:
        return mid
    x = lo + (hi - lo) * m_lo / (m_lo - m_hi)
    return min(max(x, lo + res), hi - res)
