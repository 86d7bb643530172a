"""A Server run against its schedule: LoadGen's completed rate next to the rate it
scheduled, flagged UNDER-DELIVERED past a tolerance (LoadGen may call such a run VALID), and
goodput, the requests that met both token latency limits. For summary.json and report.md
(``harness.report.report``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlib.serving.request_log import RequestLog


def delivery(lg: dict[str, Any], tolerance: float, log: RequestLog | None = None
             ) -> dict[str, Any] | None:  # fmt: skip
    """Server: LoadGen's completed rate against the rate it scheduled; ``under_delivered``
    where the run trails by more than ``tolerance`` (a share). LoadGen may call such a run
    VALID: its limits are on latency percentiles, and a system can fall behind the schedule
    while most requests still meet them. None outside Server.

    LoadGen's completed rate counts to the last completion, so it trails the schedule by
    about one request's latency over the run's length even where the system keeps up (5% on
    a 2 s run). The verdict therefore comes from the request log where there is one
    (``window_ratio``): the share completed within one early latency of the last issue. 1
    where the system keeps up; where a backlog grows, about its service rate over the rate
    LoadGen scheduled. LoadGen's ratio is kept beside it."""
    sched, done = lg.get("scheduled_samples_per_second"), lg.get("samples_per_second")
    if lg.get("scenario") != "Server" or not sched or done is None:
        return None
    ratio = float(done) / float(sched)
    out = {"scheduled_qps": float(sched), "completed_qps": float(done), "ratio": ratio,
           "loadgen_ratio": ratio, "tolerance": tolerance}  # fmt: skip
    window = window_ratio(log) if log is not None else None
    if window is not None:
        out["ratio"] = out["window_ratio"] = window
    out["under_delivered"] = out["ratio"] < 1 - tolerance
    return out


def window_ratio(log: RequestLog, min_issued: int = 32) -> float | None:
    """The share of the issued requests completed within one early latency of the last
    issue: the p90 latency of the requests issued in the first quarter of the issue window,
    before a backlog can have grown much, or of the second quarter where that is shorter (a
    server's cold start can hold the first requests for seconds, which would excuse any
    backlog; seen on vLLM's CPU build). A system that keeps up completes each request
    about that long after it came (share 1); one that falls behind is left with its backlog
    (share about its service rate over the rate LoadGen actually scheduled). A failed
    request is not done (LoadGen counts it completed: a server that fails everything fast
    would keep up). None with fewer than ``min_issued`` requests."""
    if len(log) < min_issued:
        return None
    t = log.table()
    iss, fin = (np.asarray(t[k], dtype=np.int64) for k in ("issue_ns", "final_ns"))
    done = (fin > 0) & ~np.asarray(t["error"], dtype=bool)  # a failed request is not delivered
    lo, hi = int(iss.min()), int(iss.max())
    q1, q2 = lo + (hi - lo) // 4, lo + (hi - lo) // 2
    quarters = ((iss <= q1) & done, (iss > q1) & (iss <= q2) & done)
    lags = [float(np.quantile(fin[m] - iss[m], 0.9)) for m in quarters if m.any()]
    if not lags:
        return 0.0
    lag = min(lags)  # (a cold start slows the first quarter; a backlog, the second)
    return float((done & (fin <= hi + lag)).sum()) / len(iss)


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
        steady = (f"; {d['window_ratio']:.1%} done within one early latency of the last "
                  "issue" if "window_ratio" in d else "")  # fmt: skip
        out.append(
            f"- {flag}completed {d['completed_qps']:.2f}/s of {d['scheduled_qps']:.2f} QPS "
            f"scheduled ({d.get('loadgen_ratio', d['ratio']):.1%}{steady}; tolerance "
            f"{d['tolerance']:.0%})"
        )
    g = s.get("goodput")
    if g:
        out.append(
            f"- goodput: {g['good']} of {g['issued']} requests ({g['share']:.1%}, "
            f"{g['per_second']:.2f}/s) met both the TTFT ({g['ttft_limit_ns'] / 1e6:g} ms) "
            f"and the TPOT ({g['tpot_limit_ns'] / 1e6:g} ms) limits"
        )
    return out
