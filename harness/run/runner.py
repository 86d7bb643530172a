"""One LoadGen test (benchmark, scenario, mode) in this process, in its own directory.

Run by the driver as ``python -m harness _run_one <spec.json>`` with the run directory as
working directory: LoadGen's FromConfig reads the embedded mlperf.conf only on its first
call in a process, and would silently apply an ``audit.config`` found in the working
directory.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import shutil
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.delivery import delivery, goodput
from harness.report.plots import plot_run
from harness.report.report import (
    RunSummary,
    harness_result,
    loadgen_result,
    overall_validity,
    parse_detail_log,
    reasoning_summary,
    write_report,
)
from harness.run.interrupt import ChildSignals, TestInProgress
from harness.run.prepare import (
    LG_SCENARIO,
    MODE_DIR,
    TestPlan,
    prepare,
    test_settings,
    warmup_requests,
)
from harness.run.progress import Progress
from harness.run.stop_early import Limits, StopWhenInvalid
from harness.run.sut import HarnessSUT, LoadGenSink
from llmlib.config.settings import Config
from llmlib.deploy.gpu_monitor import GpuMonitor
from llmlib.errors import ConfigError, LLMLibError
from llmlib.eval.compliance import audit_thresholds, check_test06, check_test07, check_test09
from llmlib.eval.rules import (
    check_llm_run,
    official_settings,
)
from llmlib.serving.core import LLMCore
from llmlib.serving.disagg import PDServer
from llmlib.serving.pool import LLMServer, Pool
from llmlib.serving.request_log import RequestLog
from llmlib.serving.warmup import run_warmup, wait_until_healthy

log = logging.getLogger("harness")

# the per-test process's signal handling (harness.run.interrupt), set by main_child
CHILD_SIGNALS: ChildSignals | None = None


class SweepAfterFailures:
    """While the cyclic GC is off for a test, collect now and then when requests failed
    since the last look (each failure leaves a few reference cycles; a long run with a
    flaky server would otherwise grow by ~35 KB per failure). A healthy run pays nothing."""

    def __init__(self, cores: list[LLMCore], period_s: float = 2.0) -> None:
        self.cores, self.period_s = cores, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc-sweep", daemon=True)

    def __enter__(self) -> SweepAfterFailures:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seen = 0
        while not self._stop.wait(self.period_s):
            failed = sum(c.telemetry.failed for c in self.cores)
            if failed != seen:
                seen = failed
                gc.collect()


def pool_summary(server: Pool, origin_ns: int) -> RunSummary:
    """What the pool's policies did (migrations...), each core taken out of or back into
    the rotation (times from ``origin_ns``), and a disaggregated run's pools."""
    out: RunSummary = {"policy_stats": server.policy.stats()}
    if isinstance(server, LLMServer):
        out["core_health"] = server.health.summary(origin_ns)
    if isinstance(server, PDServer):
        out["core_health"] = sorted(
            server.prefill.health.summary(origin_ns) + server.decode_health.summary(origin_ns),
            key=lambda e: e["t_s"],
        )
        out["pools"] = {"prefill": len(server.prefill.cores), "decode": len(server.decode)}
        out["decode_policy_stats"] = server.decode_policy.stats()
        out["handed_over"] = server.handed_over
        out["kv_transfer"] = {"base_ns": server.transfer.base_ns,
                              "per_token_ns": server.transfer.per_token_ns}  # fmt: skip
    return out


def run_one(cfg: Config, mode: str, run_dir: Path, compliance: str | None = None) -> RunSummary:
    """One LoadGen test in ``run_dir``: prepared, executed, reported. With ``compliance`` (a
    test name), the test runs under that test's audit.config and its checks are made on the
    logs afterwards."""
    plan = prepare(cfg, mode, run_dir, compliance)
    progress = TestInProgress(run_dir, plan.label, server=plan.server, base={
        "benchmark": cfg.benchmark, "scenario": cfg.scenario,
        "mode": compliance or MODE_DIR[mode], "core_type": cfg.core_type,
    })  # fmt: skip
    if CHILD_SIGNALS is not None:
        CHILD_SIGNALS.current = progress
    try:
        done = execute(plan, progress)
    finally:
        plan.server.close()
    return report(plan, done)


@dataclass
class Executed:
    """What a test left behind: its request log, its start (perf_counter_ns) and length, and
    with --trace_memory the code sites whose allocations grew most during it."""

    rlog: RequestLog
    t0_ns: int
    duration_ns: int
    memory_growth: list[dict[str, Any]] | None = None
    gpu: GpuMonitor | None = None


class MemoryTrace:
    """``--trace_memory``: tracemalloc from the test's start to its end, then the ``top``
    sites (file:line) by growth; nothing at all when off."""

    def __init__(self, on: bool, top: int = 15) -> None:
        self.on, self.n = on, top
        self.growth: list[dict[str, Any]] | None = None

    def __enter__(self) -> MemoryTrace:
        if self.on:
            tracemalloc.start()
            self._start = tracemalloc.take_snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.on:
            return
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        self.growth = [
            {"site": str(st.traceback[0]), "bytes": st.size_diff, "blocks": st.count_diff}
            for st in end.compare_to(self._start, "lineno")[: self.n]
        ]
        for g in self.growth:
            log.info("memory grew %+d B in %+d blocks at %s", g["bytes"], g["blocks"], g["site"])


def execute(plan: TestPlan, progress: TestInProgress) -> Executed:
    """Health checks, warmup, then LoadGen's test over the pool (the caller closes it)."""
    import mlperf_loadgen as lg

    cfg, run_dir, server, notes = plan.cfg, plan.run_dir, plan.server, plan.notes
    wait_until_healthy(server.cores, cfg.readiness_timeout_s)
    if run_warmup(server, warmup_requests(plan.dataset, cfg.warmup_queries, plan.stream)):
        notes.append("some warmup queries failed (see harness.log)")
    rlog = progress.rlog = RequestLog(spill_dir=run_dir / "requests")
    sut = HarnessSUT(server, plan.dataset, LoadGenSink(), plan.stream, rlog, cfg.output_dtype,
                     count_failed_as_two=plan.perf_run)  # fmt: skip
    ts = test_settings(lg, cfg, plan.spec, plan.mode, len(plan.dataset), run_dir, notes)
    settings = lg.LogSettings()
    settings.enable_trace = cfg.enable_trace
    settings.log_output.outdir = str(run_dir)
    settings.log_output.copy_summary_to_stdout = False
    audit = run_dir / "audit.config"
    if cfg.audit_config:
        shutil.copyfile(cfg.audit_config, audit)
        notes.append(f"audit.config applied deliberately: {cfg.audit_config}")
    audit_arg = str(audit if cfg.audit_config else run_dir / "none")
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    qsl = lg.ConstructQSL(
        len(plan.dataset), ts.performance_sample_count_override, lambda s: None, lambda s: None
    )
    # The request path makes no reference cycles; the cyclic GC's pauses (which grow
    # with the heap of per-request records) would only add latency jitter. A failed
    # request does make some (an exception's traceback and frames, in aiohttp: ~70
    # objects each, measured): they are swept after failures (SweepAfterFailures).
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = progress.t0_ns = time.perf_counter_ns()
        log.info("LoadGen test started")
        with (
            Progress(rlog, plan.label, cfg.progress_interval_s, cfg.show_steady_state_progress,
                     cfg.progress),
            SweepAfterFailures(server.cores),
            MemoryTrace(cfg.trace_memory) as trace,
            GpuMonitor(cfg.gpu_sample_interval_s, run_dir / "gpu.csv") as gpu,
            stop_watch(plan, rlog, ts, t0),
        ):  # fmt: skip
            test = lambda: lg.StartTestWithLogSettings(lg_sut, qsl, ts, settings, audit_arg)  # noqa: E731
            if CHILD_SIGNALS is not None:  # on a thread: signals are handled meanwhile
                CHILD_SIGNALS.wait_for(test)
            else:
                test()
        duration = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(lg_sut)
    return Executed(rlog, t0, duration, trace.growth, gpu)


def stop_watch(plan: TestPlan, rlog: RequestLog, ts: Any, t0_ns: int
               ) -> contextlib.AbstractContextManager[Any]:  # fmt: skip
    """``--stop_when_invalid`` on a Server performance run in the driver's child: the watch
    that stops the test once it is settled INVALID (``harness.run.stop_early``)."""
    if not (plan.cfg.stop_when_invalid and plan.perf_run and not plan.compliance
            and plan.cfg.scenario == "server"
            and CHILD_SIGNALS is not None):  # fmt: skip
        return contextlib.nullcontext()
    return StopWhenInvalid(rlog, Limits.of(ts), t0_ns, CHILD_SIGNALS.stop_settled)


def report(plan: TestPlan, done: Executed) -> RunSummary:
    """After the test (the pool closed): the request log written, LoadGen's logs read, the
    run rules and compliance checks made, summary.json, report.md and the plots."""
    cfg, run_dir, server, notes = plan.cfg, plan.run_dir, plan.server, plan.notes
    cores = server.cores
    notes += [n for c in cores for n in c.report_notes()]
    if isinstance(server, PDServer):
        n_pre = len(server.prefill.cores)
        notes.append(
            f"disaggregated: prefill cores 0-{n_pre - 1} ({plan.policy_name}), decode cores "
            f"{n_pre}-{len(cores) - 1} ({cfg.decode_policy}), KV transfer "
            f"{server.transfer.base_ns / 1e3:g} us + {server.transfer.per_token_ns:g} ns/token "
            "per prefill core's link; prefill cores complete only one-token answers (the rest "
            "go on to decode)"
        )
    rlog = done.rlog
    rlog.finish()  # (requests/: the whole log, as Parquet)
    notes += [f"request log: {e}: kept in memory, requests.csv has it" for e in rlog.spill_errors]
    rlog.write_csv(run_dir / "requests.csv", done.t0_ns)
    detail = parse_detail_log(run_dir / "mlperf_log_detail.txt")
    summary_txt = run_dir / "mlperf_log_summary.txt"
    lg_res = loadgen_result(detail, summary_txt.read_text() if summary_txt.is_file() else "")
    h_res = harness_result(rlog, done.duration_ns, server.issued)
    validity, reasons = overall_validity(lg_res, h_res)
    rules = None
    if plan.perf_run:
        rules = {
            "level": "error" if cfg.test_mode == "SubmissionRun" else "warning",
            "problems": check_llm_run(
                detail,
                official_settings(plan.spec.mlperf_model, LG_SCENARIO[cfg.scenario]),
                cfg.scenario,
            ),
        }
    checks = compliance_checks(plan) if plan.compliance else None
    summary: RunSummary = {
        "benchmark": cfg.benchmark,
        "scenario": cfg.scenario,
        "mode": plan.compliance or MODE_DIR[plan.mode],
        "compliance": checks,
        "rules": rules,
        "system": cfg.system_name,
        "core_type": cfg.core_type,
        "num_cores": len(cores),
        "policy": plan.policy_name,
        "mlperf_model": plan.spec.mlperf_model,
        "dataset": plan.dataset.name,
        "samples": len(plan.dataset),
        "started": plan.started,
        "run_dir": str(run_dir),
        "validity": validity,
        "reasons": reasons,
        "loadgen": lg_res,
        "harness": h_res,
        "notes": notes,
        "memory_growth": done.memory_growth,
        "delivery": delivery(lg_res, cfg.delivery_tolerance, rlog),
        "goodput": goodput(rlog, done.duration_ns, lg_res),
        "config": cfg.values,
        "config_sources": cfg.sources,
    }
    summary.update(pool_summary(server, done.t0_ns))
    if done.gpu is not None and (gpu_note := done.gpu.note()):
        notes.append(gpu_note)
        summary["gpu"] = done.gpu.summary()
    files = [f for c in cores for f in c.write_records(run_dir)]
    if files:
        notes.append(f"per-request records of the cores: {', '.join(files)}")
    records = [r for c in cores for r in c.reasoning_records() if r[0] >= 0]  # (not warmup)
    if records:
        summary["reasoning"] = reasoning_summary(records, run_dir)
    try:
        summary["plots"] = plot_run(run_dir, summary) if cfg.plots else []
        if not summary["plots"] and cfg.plots:
            notes.append("no plots: matplotlib is not installed (pip install -e .[plots])")
    except Exception as exc:  # a plotting problem must not cost the run its report
        log.exception("plotting failed")
        notes.append(f"plots failed: {exc!r} (see harness.log)")
    write_report(run_dir, summary)
    return summary


def compliance_checks(plan: TestPlan) -> dict[str, Any]:
    """A compliance test's verification on its logs, its verify_*.txt written next to them
    as MLPerf's run_verification.py writes it; the result for summary.json."""
    cfg, run_dir = plan.cfg, plan.run_dir
    log_path = run_dir / "mlperf_log_accuracy.json"
    if plan.compliance == "TEST06":
        res06 = check_test06(log_path, cfg.scenario, plan.spec.eos_id, cfg.output_dtype)
        (run_dir / "verify_accuracy.txt").write_text(res06.verify_text())
        return res06.to_json()
    limits = audit_thresholds(cfg.audit_config)
    if plan.compliance == "TEST07":
        threshold = limits.get("test07_accuracy_threshold")
        if threshold is None:
            raise ConfigError(f"{cfg.audit_config}: no test07_accuracy_threshold")

        def scorer(path: Path) -> tuple[float | None, int, str]:
            from harness.report.evaluate import score_log

            answers = {r[1]: r[3] for c in plan.server.cores for r in c.reasoning_records()}
            res = score_log(cfg, plan.spec, plan.dataset, path, answer_tokens=answers or None)
            return res.scores.get("exact_match"), res.samples, res.table()

        res07 = check_test07(log_path, threshold, scorer)
        if res07.problem is None and res07.samples < len(plan.dataset):
            res07.problem = (
                f"{res07.samples} of the dataset's {len(plan.dataset)} samples logged: TEST07 "
                "scores every sample (the audit.config's accuracy_log_sampling_target and "
                "min_query_count must cover the TEST07 dataset)"
            )
        (run_dir / "verify_accuracy.txt").write_text(res07.verify_text())
        return res07.to_json()
    if plan.compliance == "TEST09":
        lo, hi = limits.get("test09_min_output_tokens"), limits.get("test09_max_output_tokens")
        if lo is None or hi is None:
            raise ConfigError(f"{cfg.audit_config}: needs test09_min/max_output_tokens")
        res09 = check_test09(log_path, lo, hi, cfg.output_dtype)
        (run_dir / "verify_output_len.txt").write_text(res09.verify_text())
        return res09.to_json()
    raise ConfigError(f"no verification for compliance test {plan.compliance}")


NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk, a file-size limit, a quota


def main_child(spec_path: str) -> int:
    """Entry of the per-test process: ``python -m harness _run_one <spec.json>``."""
    global CHILD_SIGNALS
    CHILD_SIGNALS = ChildSignals().install()
    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])
    logging.raiseExceptions = False  # a log that cannot be written (a full disk) is no traceback
    logging.basicConfig(
        level=logging.INFO,
        filename=run_dir / "harness.log",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = Config.from_json(spec["config"])
    (run_dir / "config.txt").write_text(cfg.describe() + "\n")
    try:
        run_one(cfg, spec["mode"], run_dir, spec.get("compliance"))
    except LLMLibError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            log.exception("test failed")
            raise
        where = f" ({Path(exc.filename).name})" if exc.filename else ""
        print(f"error: the test ran, but its results could not be written in {run_dir}: "
              f"{exc.strerror}{where}; free space there (or raise the file-size limit), "
              "or give --log_dir elsewhere", file=sys.stderr)  # fmt: skip
        return 2
    except Exception:
        log.exception("test failed")
        raise
    return 0
