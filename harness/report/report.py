"""Reports: LoadGen's verdict (from mlperf_log_detail.txt) next to the harness's own
per-request records. Writes summary.json, report.md and requests.csv into the run directory."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from harness.report.delivery import delivery_lines
from llmlib.serving.health import describe_events
from llmlib.serving.request_log import RequestLog


class RunSummary(TypedDict, total=False):
    """``summary.json``: one test's verdict and figures, as the runner writes it (a run of an
    older version may lack keys; the pool's keys are there when the pool has them)."""

    benchmark: str
    scenario: str
    mode: str  # performance, accuracy or a compliance test's name
    compliance: dict[str, Any] | None  # the compliance test's checks
    rules: dict[str, Any] | None  # MLPerf's run rules: level and problems
    system: str
    core_type: str
    num_cores: int
    policy: str
    policy_stats: dict[str, Any]
    core_health: list[dict[str, Any]]  # cores taken out of and back into the rotation
    pools: dict[str, int]  # a disaggregated run's pool sizes
    decode_policy_stats: dict[str, Any]
    handed_over: int
    kv_transfer: dict[str, int]
    mlperf_model: str
    dataset: str
    samples: int
    started: str
    run_dir: str
    validity: str  # VALID or INVALID (INTERRUPTED: written by harness.run.interrupt)
    reasons: list[str]
    loadgen: dict[str, Any]
    harness: dict[str, Any]
    notes: list[str]
    memory_growth: list[dict[str, Any]] | None
    reasoning: dict[str, Any]  # a reasoning model's split of its output (reasoning.csv)
    gpu: dict[str, Any] | None  # NVML's facts and samples over the test (gpu.csv)
    delivery: dict[str, Any] | None  # Server: completed/s against the scheduled QPS
    goodput: dict[str, Any] | None  # requests that met both token latency limits
    config: dict[str, Any]
    config_sources: dict[str, str]
    plots: list[str]


_PCTS = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def parse_detail_log(path: str | Path) -> dict[str, Any]:
    """The ``:::MLLOG`` records of a LoadGen detail log as ``key -> value`` (last wins)."""
    out: dict[str, Any] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                rec = json.loads(line[9:])
            except json.JSONDecodeError:
                continue
            out[rec.get("key")] = rec.get("value")
    return out


EARLY_STOPPING = "early stopping not satisfied"  # a reason a run is INVALID


def loadgen_result(detail: dict[str, Any], summary_txt: str = "") -> dict[str, Any]:
    """LoadGen's result in one dict: validity with the reasons, throughput, latency
    percentiles (ns) as LoadGen computed them."""
    if not detail:
        return {"validity": "MISSING", "reasons": ["LoadGen wrote no detail log"]}
    scenario = str(detail.get("effective_scenario", ""))
    validity = str(detail.get("result_validity", "UNKNOWN"))
    reasons = []
    checks = (
        ("result_perf_constraints_met", "performance constraints (latency/TTFT/TPOT) not met"),
        ("result_min_duration_met", "minimum duration not met"),
        ("result_min_queries_met", "minimum query count not met"),
        ("early_stopping_met", EARLY_STOPPING),
    )
    for key, text in checks:
        if detail.get(key) is False:
            reasons.append(text)
    if "Early stopping satisfied: NO" in summary_txt and EARLY_STOPPING not in reasons:
        reasons.append(EARLY_STOPPING)
    if detail.get("result_invalid_reason"):
        reasons.append(str(detail["result_invalid_reason"]).strip())
    offline = scenario == "Offline"
    res: dict[str, Any] = {
        "validity": validity,
        "reasons": reasons,
        "scenario": scenario,
        "mode": detail.get("effective_test_mode"),
        "samples_per_second": detail.get(
            "result_samples_per_second" if offline else "result_completed_samples_per_sec"
        ),
        "tokens_per_second": detail.get(
            "result_tokens_per_second" if offline else "result_completed_tokens_per_second"
        ),
        "target_qps": detail.get("effective_target_qps"),
        "scheduled_samples_per_second": detail.get("result_scheduled_samples_per_sec"),
        "query_count": detail.get("result_query_count"),
        "ttft_limit_ns": detail.get("requested_server_ttft_latency"),
        "tpot_limit_ns": detail.get("requested_server_tpot_latency"),
        "latency_ns": _pcts(detail, "result_{p}_percentile_latency_ns", "result_mean_latency_ns"),
        "ttft_ns": _pcts(
            detail,
            "result_first_token_{p}_percentile_latency_ns",
            "result_first_token_mean_latency_ns",
        ),
        "tpot_ns": _pcts(
            detail,
            "result_time_per_output_token_{p}_percentile_ns",
            "result_time_to_output_token_mean",
        ),
        "errors": detail.get("num_errors"),
        "early_stopping_more_queries": early_stopping_more(detail, summary_txt),
    }
    return res


_MORE = re.compile(r"Would need to run at least (\d+) more queries")


def early_stopping_more(detail: dict[str, Any], summary_txt: str = "") -> int:
    """How many more queries LoadGen's early stopping asked for (0: none), the most over its
    estimates (TTFT, TPOT or latency): with that many more, every one under the limits, the
    run would pass it. LoadGen says it in ``early_stopping_*result`` and the summary."""
    texts = [str(v) for k, v in detail.items() if str(k).startswith("early_stopping")]
    return max((int(n) for t in [*texts, summary_txt] for n in _MORE.findall(t)), default=0)


def _pcts(detail: dict[str, Any], pattern: str, mean_key: str) -> dict[str, float]:
    out = {}
    for p in _PCTS:
        v = detail.get(pattern.format(p=p))
        if v is not None:
            out[f"p{float(p):g}"] = v
    if detail.get(mean_key) is not None:
        out["mean"] = detail[mean_key]
    return out


def harness_result(log: RequestLog, duration_ns: int, per_core_issued: list[int]) -> dict[str, Any]:
    """The harness's own view from its per-request records."""
    ttft, tpot = log.latencies()
    secs = max(duration_ns, 1) / 1e9
    per_core: dict[int, dict[str, int]] = {}
    err_col = log.column("error")
    for core, err, n in zip(log.column("core"), err_col, log.column("n_tokens"), strict=True):
        c = per_core.setdefault(core, {"completed": 0, "failed": 0, "tokens": 0})
        if err:
            c["failed"] += 1
        else:
            c["completed"] += 1
            c["tokens"] += n
    errors: dict[str, int] = {}
    for err in err_col:
        if err:
            errors[err] = errors.get(err, 0) + 1
    return {
        "issued": len(log),
        "completed": log.completed,
        "failed": log.failed,
        "tokens": log.tokens,
        "duration_s": secs,
        "samples_per_second": log.completed / secs,
        "tokens_per_second": log.tokens / secs,
        "ttft_ns": percentiles(ttft),
        "tpot_ns": percentiles(tpot),
        "latency_ns": percentiles(log.total_latencies()),
        "per_core": {
            str(i): {"issued": n, **per_core.get(i, {})} for i, n in enumerate(per_core_issued)
        },
        "errors": errors,
        "failed_after_first_token": log.failed_after_first_token(),
    }


def overall_validity(lg: dict[str, Any], harness: dict[str, Any]) -> tuple[str, list[str]]:
    """VALID only if LoadGen says so and no request failed."""
    reasons = list(lg.get("reasons", []))
    if harness["failed"]:
        reasons.append(f"{harness['failed']} of {harness['issued']} requests failed")
    if harness["completed"] + harness["failed"] < harness["issued"]:
        reasons.append(
            f"{harness['issued'] - harness['completed'] - harness['failed']} "
            "requests never completed"
        )
    valid = lg.get("validity") == "VALID" and not harness["failed"]
    return ("VALID" if valid else "INVALID"), reasons


def _ms(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "-" if v is None else f"{v / 1e6:.2f}"


def write_report(run_dir: Path, summary: RunSummary) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (run_dir / "report.md").write_text(render_markdown(summary))


def compliance_lines(comp: dict[str, Any]) -> list[str]:
    """A compliance test's verdict and checks for report.md."""
    head = f"**{comp['test']}: {comp['result']}** on {comp['samples']} logged samples"
    perf = "This run's performance figures below come from the audit settings and are not a result."
    if comp["test"] == "TEST07":
        score = comp["exact_match"]
        lines = [
            f"{head} (`verify_accuracy.txt`): exact_match "
            f"{'not scored' if score is None else f'{score:.3f}'} against the threshold "
            f"{comp['threshold']:g}. {perf}"
        ]
    elif comp["test"] == "TEST09":
        lines = [
            f"{head} (`verify_output_len.txt`): mean output {comp['mean_output_tokens']:.2f} "
            f"tokens, accepted {comp['min_output_tokens']:g} .. {comp['max_output_tokens']:g}. "
            f"{perf}"
        ]
    else:
        checks = comp["checks"]
        lines = [
            f"{head} (`verify_accuracy.txt`). {perf}",
            "",
            "| check | pass |",
            "|---|---|",
            f"| final data starts with the first-token data | {checks['first_token']} |",
            f"| at most one trailing EOS | {checks['eos']} |",
            f"| token_count equals the data length | {checks['length']} |",
        ]
    if comp.get("problem"):
        lines += ["", f"Problem: {comp['problem']}"]
    if comp.get("failures"):
        lines += ["", "First failures:"] + [
            f"- {f['check']}: seq {f['seq_id']}, sample {f['qsl_idx']}: {f['why']}"
            for f in comp["failures"]
        ]
    return lines


def render_markdown(s: RunSummary) -> str:
    lg, h = s["loadgen"], s["harness"]
    lines = [
        f"# {s['benchmark']} / {s['scenario']} / {s['mode']}",
        "",
        f"System `{s['system']}`, core `{s['core_type']}` x{s['num_cores']}, policy "
        f"`{s['policy']}`, LoadGen model `{s['mlperf_model']}`, started {s['started']}.",
        "",
    ]
    comp = s.get("compliance")
    if comp:
        lines += compliance_lines(comp) + [""]
    lines.append(f"**Result: {s['validity']}** (LoadGen: {lg.get('validity')})")
    lines += [f"- {r}" for r in s["reasons"]]
    lines += delivery_lines(s)
    rules = s.get("rules")
    if rules is not None:
        if rules["problems"]:
            what = "Errors" if rules["level"] == "error" else "Warnings"
            lines += ["", f"{what} against MLPerf's rules for a submission:"]
            lines += [f"- {p}" for p in rules["problems"]]
        else:
            lines += [
                "",
                "Meets MLPerf's run rules checked here (duration, queries, samples, "
                "token latencies, limits).",
            ]
    lines += [
        "",
        "| | LoadGen | harness |",
        "|---|---|---|",
        f"| samples/s | {_num(lg.get('samples_per_second'))} | {_num(h['samples_per_second'])} |",
        f"| tokens/s | {_num(lg.get('tokens_per_second'))} | {_num(h['tokens_per_second'])} |",
    ]
    for name, key in (("TTFT", "ttft_ns"), ("TPOT", "tpot_ns"), ("latency", "latency_ns")):
        for p in ("p50", "p90", "p99", "p99.9", "mean"):
            lgv, hv = lg.get(key, {}), h.get(key, {})
            if p in lgv or p in hv:
                lines.append(f"| {name} {p} (ms) | {_ms(lgv, p)} | {_ms(hv, p)} |")
    lines += [
        "",
        f"Requests: {h['issued']} issued, {h['completed']} completed, "
        f"{h['failed']} failed, {h['tokens']} output tokens.",
        "",
        "| core | issued | completed | failed | tokens |",
        "|---|---|---|---|---|",
    ]
    for cid, c in h["per_core"].items():
        lines.append(
            f"| {cid} | {c['issued']} | {c.get('completed', 0)} | "
            f"{c.get('failed', 0)} | {c.get('tokens', 0)} |"
        )
    for png in s.get("plots") or []:
        lines += ["", f"![{png[:-4].replace('_', ' ')}]({png})"]
    if h["errors"]:
        lines += ["", "Errors:"] + [f"- {n} x {e}" for e, n in h["errors"].items()]
    if s.get("core_health"):
        lines += ["", "Cores taken out of the rotation or back (the pool's breaker):"]
        lines += [f"- {line}" for line in describe_events(s["core_health"])]
    if h.get("failed_after_first_token"):
        lines += [
            "",
            f"{h['failed_after_first_token']} request(s) failed after their first token: "
            "LoadGen was given the tokens each had received, counted as at least 2, so its "
            "TPOT stays meaningful (requests.csv: the rows with an error and a ttft_ms; "
            "tokens_before_failure says how many arrived).",
        ]
    if s.get("reasoning"):
        lines += ["", *reasoning_lines(s["reasoning"])]
    if s.get("notes"):
        lines += ["", "Notes:"] + [f"- {n}" for n in s["notes"]]
    lines += [
        "",
        "Files: `mlperf_log_summary.txt`, `mlperf_log_detail.txt`, `requests.csv` "
        "(per-request TTFT/TPOT), `summary.json`, `config.txt`.",
        "",
    ]
    return "\n".join(lines)


def reasoning_summary(records: list[tuple[int, int, int, int, int]], run_dir: Path) -> dict:
    """A reasoning model's split of its output: ``reasoning.csv`` (per request: id, sample,
    reasoning and answer tokens, ms from issue to the first answer token) and the figures
    for summary.json: tokens of each kind per request, the reasoning share, and TTFT to the
    first answer token (LoadGen's TTFT is to the first generated token, reasoning included)."""
    arr = np.asarray(records, dtype=np.int64).reshape(-1, 5)
    with open(run_dir / "reasoning.csv", "w") as f:
        f.write("request_id,sample,reasoning_tokens,answer_tokens,ttft_answer_ms\n")
        for rid, sample, r, a, t in arr.tolist():
            f.write(f"{rid},{sample},{r},{a},{'' if t < 0 else f'{t / 1e6:.3f}'}\n")
    total = int(arr[:, 2].sum() + arr[:, 3].sum())
    ttfa = arr[arr[:, 4] >= 0, 4]
    return {
        "requests": len(arr),
        "reasoning_tokens": percentiles(arr[:, 2]),
        "answer_tokens": percentiles(arr[:, 3]),
        "reasoning_share": float(arr[:, 2].sum() / total) if total else 0.0,
        "ttft_answer_ns": percentiles(ttfa),
    }


def reasoning_lines(r: dict[str, Any]) -> list[str]:
    rt, at, tt = r["reasoning_tokens"], r["answer_tokens"], r["ttft_answer_ns"]
    lines = [
        f"Reasoning ({r['requests']} requests, `reasoning.csv`): "
        f"{r['reasoning_share']:.1%} of output tokens were reasoning. LoadGen counts them all "
        "and its TTFT is to the first generated token; TTFT to the first answer token is "
        "an extra figure, not MLPerf's.",
        "",
        "| per request | p50 | p90 | p99 | mean |",
        "|---|---|---|---|---|",
    ]
    for name, v, scale in (("reasoning tokens", rt, 1.0), ("answer tokens", at, 1.0),
                           ("TTFT to first answer token (ms)", tt, 1e6)):  # fmt: skip
        if v:
            cells = " | ".join(f"{v[p] / scale:,.1f}" for p in ("p50", "p90", "p99", "mean"))
            lines.append(f"| {name} | {cells} |")
    return lines


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):,.1f}"


def console_table(summaries: list[dict[str, Any]]) -> str:
    head = (
        "benchmark",
        "scenario",
        "mode",
        "result",
        "samples/s",
        "tokens/s",
        "TTFT p99 ms",
        "TPOT p99 ms",
        "failed",
    )
    rows = [head]
    for s in summaries:
        lg, h = s["loadgen"], s["harness"]
        rows.append(
            (
                s["benchmark"],
                s["scenario"],
                s["mode"],
                f"{s['compliance']['test']} {s['compliance']['result']}"
                if s.get("compliance")
                else s["validity"]
                + (" UNDER-DELIVERED" if (s.get("delivery") or {}).get("under_delivered") else ""),
                _num(lg.get("samples_per_second")),
                _num(lg.get("tokens_per_second")),
                _ms(lg.get("ttft_ns", {}), "p99"),
                _ms(lg.get("tpot_ns", {}), "p99"),
                str(h["failed"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


def percentiles(values: np.ndarray, ps: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": ..., "p99.9": ..., "mean": ...}``; empty dict when no values."""
    if len(values) == 0:
        return {}
    out = {f"p{p:g}": float(np.percentile(values, p)) for p in ps}
    out["mean"] = float(np.mean(values))
    out["max"] = float(np.max(values))
    return out
