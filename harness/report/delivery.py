"""A Server run against its schedule: LoadGen's completed rate next to the rate it
scheduled, flagged UNDER-DELIVERED past a tolerance (LoadGen may call such a run VALID), and
goodput, the requests that met both token latency limits. For summary.json and report.md
(``harness.report.report``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlib.serving.request_log import RequestLog


def delivery(lg: dict[str, Any], tolerance: float) -> dict[str, Any] | None:
    """Server: LoadGen's completed rate against the rate it scheduled; ``under_delivered``
    where it trails by more than ``tolerance`` (a share). LoadGen may call such a run VALID:
    its limits are on latency percentiles, and a system can fall behind the schedule while
    most requests still meet them. The completed rate counts to the last completion, so on a
    short run one request's latency weighs in too. None outside Server."""
    sched, done = lg.get("scheduled_samples_per_second"), lg.get("samples_per_second")
    if lg.get("scenario") != "Server" or not sched or done is None:
        return None
    ratio = float(done) / float(sched)
    return {"scheduled_qps": float(sched), "completed_qps": float(done), "ratio": ratio,
            "tolerance": tolerance, "under_delivered": ratio < 1 - tolerance}  # fmt: skip


def goodput(log: RequestLog, duration_ns: int, lg: dict[str, Any]) -> dict[str, Any] | None:
    """The requests that met both their TTFT and their TPOT limit (LoadGen's, from its
    detail log; a one-token answer has no TPOT to miss), of the issued ones, and per second.
    None where LoadGen set no token latency limits (Offline, SingleStream)."""
    ttft_lim, tpot_lim = lg.get("ttft_limit_ns"), lg.get("tpot_limit_ns")
    if not ttft_lim or not tpot_lim or not len(log):
        return None
    t = log.table()
    iss, fst, fin = (np.asarray(t[k], dtype=np.int64) for k in ("issue_ns", "first_ns", "final_ns"))
    n = np.asarray(t["n_tokens"], dtype=np.int64)
    ok = (fst > 0) & (fin > 0) & (n > 0) & ~np.asarray(t["error"], dtype=bool)
    tpot = np.where(n > 1, (fin - fst) / np.maximum(n - 1, 1), 0)
    good = int((ok & (fst - iss <= ttft_lim) & (tpot <= tpot_lim)).sum())
    return {"good": good, "issued": len(log), "share": good / len(log),
            "per_second": good / (max(duration_ns, 1) / 1e9),
            "ttft_limit_ns": ttft_lim, "tpot_limit_ns": tpot_lim}  # fmt: skip


def delivery_lines(s: Any) -> list[str]:
    """The report's lines on a Server run's delivery and goodput (none where absent)."""
    out = []
    d = s.get("delivery")
    if d:
        flag = "**UNDER-DELIVERED**: " if d["under_delivered"] else ""
        out.append(
            f"- {flag}completed {d['completed_qps']:.2f}/s of {d['scheduled_qps']:.2f} QPS "
            f"scheduled ({d['ratio']:.1%}; tolerance {d['tolerance']:.0%})"
        )
    g = s.get("goodput")
    if g:
        out.append(
            f"- goodput: {g['good']} of {g['issued']} requests ({g['share']:.1%}, "
            f"{g['per_second']:.2f}/s) met both the TTFT ({g['ttft_limit_ns'] / 1e6:g} ms) "
            f"and the TPOT ({g['tpot_limit_ns'] / 1e6:g} ms) limits"
        )
    return out
