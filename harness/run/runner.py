"""One LoadGen test (benchmark, scenario, mode) in this process, in its own directory.

Run by the driver as ``python -m harness _run_one <spec.json>`` with the run directory as
working directory: LoadGen's FromConfig reads the embedded mlperf.conf only on its first
call in a process, and would silently apply an ``audit.config`` found in the working
directory.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.report.plots import plot_run
from harness.report.report import (
    harness_result,
    loadgen_result,
    overall_validity,
    parse_detail_log,
    write_report,
)
from harness.run.interrupt import ChildSignals, TestInProgress
from harness.run.progress import Progress
from harness.run.sut import HarnessSUT, LoadGenSink
from llmlib.config.settings import Config
from llmlib.data.benchmarks import (
    BenchmarkSpec,
    Dataset,
    RequestBuilder,
    SyntheticDataset,
    load_benchmark,
)
from llmlib.data.loaders import TEXT_FORMATS, load_dataset
from llmlib.data.tokenizer import load_tokenizer
from llmlib.errors import ConfigError, LLMLibError
from llmlib.eval.compliance import check_test06
from llmlib.eval.rules import (
    MAX_SCHEDULED_QUERIES,
    check_llm_run,
    check_schedule,
    official_settings,
)
from llmlib.model.engine import profile_from_config
from llmlib.model.simulator import KVTransfer
from llmlib.serving.core import LLMCore
from llmlib.serving.disagg import PDServer
from llmlib.serving.policies import DEFAULT_POLICY, make_policy
from llmlib.serving.pool import LLMServer, Pool
from llmlib.serving.registry import get_core_class
from llmlib.serving.request import LLMRequest
from llmlib.serving.request_log import RequestLog
from llmlib.serving.warmup import run_warmup, wait_until_healthy

log = logging.getLogger("harness")

# the per-test process's signal handling (harness.run.interrupt), set by main_child
CHILD_SIGNALS: ChildSignals | None = None

LG_SCENARIO = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream"}
MODE_DIR = {"PerformanceOnly": "performance", "AccuracyOnly": "accuracy"}


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


def build_cores(cfg: Config) -> list[LLMCore]:
    cls = get_core_class(cfg.core_type)
    n = cls.num_cores_for_workload(cfg)
    return [cls(i, cls.config_for_core(i, cfg)) for i in range(n)]


def build_server(cfg: Config, policy_name: str) -> Pool:
    """The pool the run issues to: one ``LLMServer`` of the core type's cores, or with
    ``pd_flags`` a ``PDServer`` of prefill and decode dummy cores."""
    if not cfg.pd_flags:
        cores = build_cores(cfg)
        policy = make_policy(policy_name, len(cores), cfg.policy_seed, cfg.policy_flags)
        return LLMServer(cores, policy)
    from cores.dummy import DummyCore

    n_pre, n_dec = int(cfg.pd_flags["prefill"]), int(cfg.pd_flags["decode"])
    pre = [DummyCore(i, cfg, role="prefill") for i in range(n_pre)]
    dec = [DummyCore(n_pre + i, cfg, role="decode") for i in range(n_dec)]
    return PDServer(
        pre,
        dec,
        make_policy(policy_name, n_pre, cfg.policy_seed, cfg.policy_flags),
        make_policy(cfg.decode_policy, n_dec, cfg.policy_seed, cfg.decode_policy_flags),
        KVTransfer.from_flags(cfg.kv_transfer),
    )


def pool_summary(server: Pool, origin_ns: int) -> dict[str, Any]:
    """What the pool's policies did (migrations...), each core taken out of or back into
    the rotation (times from ``origin_ns``), and a disaggregated run's pools."""
    out: dict[str, Any] = {"policy_stats": server.policy.stats()}
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


def check_pools(cfg: Config) -> None:
    """The pool settings, before any process starts: policy names and their flags, and
    disaggregation's needs (the dummy core, both pool sizes)."""
    name = cfg.traffic_distribution_policy or DEFAULT_POLICY[cfg.scenario]
    make_policy(name, 1, 0, cfg.policy_flags)
    if not cfg.pd_flags:
        return
    if cfg.core_type != "dummy":
        raise ConfigError(
            f"--pd_flags: disaggregated pools run on dummy cores, not {cfg.core_type} (a real "
            "disaggregated deployment: --core_type=trtllm_disagg at its leader)"
        )
    for key in ("prefill", "decode"):
        if int(cfg.pd_flags.get(key, 0)) < 1:
            raise ConfigError(f"--pd_flags: give {key}:N with N at least 1 (prefill:2,decode:2)")
    make_policy(cfg.decode_policy, 1, 0, cfg.decode_policy_flags)
    KVTransfer.from_flags(cfg.kv_transfer)
    if profile_from_config(cfg).is_zero:
        raise ConfigError("--pd_flags: the zero profile answers at once; pick one that takes time")


def check_loadgen_targets(cfg: Config) -> None:
    """The scenario's rate, before any process starts: one whose schedule LoadGen cannot
    hold is refused (the minimum duration is mlperf.conf's unless --min_duration is set)."""
    scen = cfg.scenario
    lat = cfg.single_stream_expected_latency_ms
    rate = {
        "server": ("server_target_qps", cfg.server_target_qps, cfg.server_target_qps),
        "offline": ("offline_expected_qps", cfg.offline_expected_qps,
                    cfg.offline_expected_qps * 1.1),
        "singlestream": ("single_stream_expected_latency_ms", lat,
                         1000.0 / lat if lat > 0 else 0.0),
    }[scen]  # fmt: skip
    if rate[2] <= 0 and cfg.min_query_count <= MAX_SCHEDULED_QUERIES:
        return
    dur = cfg.min_duration
    if not dur:
        model = load_benchmark(cfg.config_dir, cfg.benchmark).mlperf_model
        dur = official_settings(model, LG_SCENARIO[scen])["min_duration_ms"]
    check_schedule(rate, dur, cfg.min_query_count)


def with_stall_timeout(cfg: Config, spec: BenchmarkSpec, notes: list[str]) -> Config:
    """``cfg`` with ``stall_timeout_s`` resolved: 0 (auto) becomes 10 x the benchmark's TTFT
    limit in mlperf.conf (its Server scenario's), at least 10 s; 30 s without one."""
    if cfg.stall_timeout_s > 0 or cfg.core_type not in STALL_WATCHED:
        return cfg
    ttft_s = official_settings(spec.mlperf_model, "Server").get("ttft_latency", 0) / 1e9
    stall = max(10.0, 10 * ttft_s) if ttft_s > 0 else 30.0
    notes.append(
        f"stall timeout {stall:g} s (auto: 10 x {spec.mlperf_model}'s TTFT limit of "
        f"{ttft_s:g} s, at least 10 s; --stall_timeout_s sets it)"
        if ttft_s > 0
        else f"stall timeout {stall:g} s (auto; --stall_timeout_s sets it)"
    )
    return cfg.replace(stall_timeout_s=stall)


# core types that watch their servers for stalls (the routing core's pools may hold them)
STALL_WATCHED = ("trtllm_endpoint", "trtllm_disagg", "triton_grpc", "routing")


def check_datasets(configs: list[Config]) -> None:
    """Read every dataset a run will use, once per benchmark, before any process starts: a
    broken line, an empty file, a missing column or a token id past the vocabulary is then
    one line and exit 2, with no run directory made (the tests' processes read the
    tokenized cache this leaves)."""
    seen: set[str] = set()
    for cfg in configs:
        if not (cfg.dataset_path or cfg.dataset_format in TEXT_FORMATS):
            continue
        if cfg.benchmark not in seen:
            seen.add(cfg.benchmark)
            build_dataset(cfg, load_benchmark(cfg.config_dir, cfg.benchmark))


def build_dataset(cfg: Config, spec: BenchmarkSpec) -> Dataset:
    if cfg.dataset_path or cfg.dataset_format in TEXT_FORMATS:
        return load_dataset(
            cfg.dataset_path,
            cfg.dataset_format,
            spec.name,
            spec.max_new_tokens,
            load_tokenizer(cfg.tokenizer_path) if cfg.tokenizer_path else None,
            cfg.cache_dir or None,
            cfg.dataset_multi_turn,
            cfg.dataset_samples,
            cfg.vocab_size,
        )
    return SyntheticDataset(spec, cfg.seed, cfg.vocab_size, cfg.sample_count)


def warmup_requests(ds: Dataset, count: int, stream: bool) -> list[LLMRequest]:
    """Warmup queries: ids below zero (never LoadGen's), samples in order."""
    idx = [i % len(ds) for i in range(count)]
    return RequestBuilder(ds, stream).build(range(-1, -1 - count, -1), idx, time.perf_counter_ns())


def test_settings(
    lg: Any,
    cfg: Config,
    spec: BenchmarkSpec,
    mode: str,
    n_samples: int,
    run_dir: Path,
    notes: list[str],
) -> Any:
    """mlperf.conf, then user.conf, then the settings given to llmlib (non-zero ones)."""
    scen = LG_SCENARIO[cfg.scenario]
    user_conf = run_dir / "user.conf"
    if cfg.user_conf:
        shutil.copyfile(cfg.user_conf, user_conf)
    else:
        user_conf.write_text("")
    ts = lg.TestSettings()
    ts.FromConfig(str(user_conf), spec.mlperf_model, scen, 1)
    ts.scenario = getattr(lg.TestScenario, scen)
    ts.mode = getattr(lg.TestMode, mode)
    if cfg.server_target_qps > 0:
        ts.server_target_qps = cfg.server_target_qps
    if cfg.offline_expected_qps > 0:
        ts.offline_expected_qps = cfg.offline_expected_qps
    if cfg.single_stream_expected_latency_ms > 0:
        ts.single_stream_expected_latency_ns = int(cfg.single_stream_expected_latency_ms * 1e6)
    if cfg.min_duration > 0:
        ts.min_duration_ms = cfg.min_duration
    if cfg.min_query_count > 0:
        ts.min_query_count = cfg.min_query_count
    if cfg.max_query_count > 0:
        ts.max_query_count = cfg.max_query_count
    psc = cfg.performance_sample_count or ts.performance_sample_count_override or n_samples
    if psc > n_samples:
        notes.append(
            f"performance sample count {psc} (mlperf.conf) is more than the dataset's "
            f"{n_samples} samples; using {n_samples}"
        )
        psc = n_samples
    ts.performance_sample_count_override = psc
    return ts


def compliance_audit_config(cfg: Config, test: str) -> Path:
    path = Path(cfg.config_dir) / "compliance" / test / "audit.config"
    if not path.is_file():
        raise ConfigError(f"{test}: audit config not found: {path}")
    return path


def run_one(cfg: Config, mode: str, run_dir: Path, compliance: str | None = None) -> dict[str, Any]:
    """One LoadGen test in ``run_dir``. With ``compliance`` (a test name), the test runs
    under that test's audit.config and its checks are made on the logs afterwards."""
    import mlperf_loadgen as lg

    if compliance:
        cfg = cfg.replace(audit_config=str(compliance_audit_config(cfg, compliance)))

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    spec = load_benchmark(cfg.config_dir, cfg.benchmark)
    notes: list[str] = []
    cfg = with_stall_timeout(cfg, spec, notes)
    dataset = build_dataset(cfg, spec)
    notes += getattr(dataset, "notes", [])
    stream = cfg.scenario != "offline"
    policy_name = cfg.traffic_distribution_policy or DEFAULT_POLICY[cfg.scenario]
    server = build_server(cfg, policy_name)
    cores = server.cores
    label = f"{cfg.benchmark} {cfg.scenario} {compliance or MODE_DIR[mode]}"
    progress = TestInProgress(run_dir, label, server=server)
    if CHILD_SIGNALS is not None:
        CHILD_SIGNALS.current = progress
    try:
        wait_until_healthy(cores, cfg.readiness_timeout_s)
        if run_warmup(server, warmup_requests(dataset, cfg.warmup_queries, stream)):
            notes.append("some warmup queries failed (see harness.log)")
        rlog = progress.rlog = RequestLog(spill_dir=run_dir / "requests")
        perf_run = mode == "PerformanceOnly" and not compliance
        sut = HarnessSUT(server, dataset, LoadGenSink(), stream, rlog, cfg.output_dtype,
                         count_failed_as_two=perf_run)  # fmt: skip
        ts = test_settings(lg, cfg, spec, mode, len(dataset), run_dir, notes)
        settings = lg.LogSettings()
        settings.enable_trace = cfg.enable_trace
        settings.log_output.outdir = str(run_dir)
        settings.log_output.copy_summary_to_stdout = False
        audit = run_dir / "audit.config"
        if cfg.audit_config:
            shutil.copyfile(cfg.audit_config, audit)
            notes.append(f"audit.config applied deliberately: {cfg.audit_config}")
        lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
        qsl = lg.ConstructQSL(
            len(dataset), ts.performance_sample_count_override, lambda s: None, lambda s: None
        )
        # The request path makes no reference cycles; the cyclic GC's pauses (which grow
        # with the heap of per-request records) would only add latency jitter. A failed
        # request does make some (an exception's traceback and frames, in aiohttp: ~70
        # objects each, measured): they are swept after failures (SweepAfterFailures).
        gc.collect()
        gc.freeze()
        gc.disable()
        t0 = progress.t0_ns = time.perf_counter_ns()
        log.info("LoadGen test started")
        audit_arg = str(audit if cfg.audit_config else run_dir / "none")
        with (
            Progress(
                rlog, label, cfg.progress_interval_s, cfg.show_steady_state_progress,
                cfg.progress,
            ),
            SweepAfterFailures(cores),
        ):  # fmt: skip
            test = lambda: lg.StartTestWithLogSettings(lg_sut, qsl, ts, settings, audit_arg)  # noqa: E731
            if CHILD_SIGNALS is not None:  # on a thread: signals are handled meanwhile
                CHILD_SIGNALS.wait_for(test)
            else:
                test()
        duration = time.perf_counter_ns() - t0
        gc.enable()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(lg_sut)
    finally:
        server.close()
    notes += [n for c in cores for n in c.report_notes()]
    if isinstance(server, PDServer):
        n_pre = len(server.prefill.cores)
        notes.append(
            f"disaggregated: prefill cores 0-{n_pre - 1} ({policy_name}), decode cores "
            f"{n_pre}-{len(cores) - 1} ({cfg.decode_policy}), KV transfer "
            f"{server.transfer.base_ns / 1e3:g} us + {server.transfer.per_token_ns:g} ns/token "
            "per prefill core's link; prefill cores complete only one-token answers (the rest "
            "go on to decode)"
        )
    rlog.finish()  # (requests/: the whole log, as Parquet)
    rlog.write_csv(run_dir / "requests.csv", t0)
    detail = parse_detail_log(run_dir / "mlperf_log_detail.txt")
    summary_txt = run_dir / "mlperf_log_summary.txt"
    lg_res = loadgen_result(detail, summary_txt.read_text() if summary_txt.is_file() else "")
    h_res = harness_result(rlog, duration, server.issued)
    validity, reasons = overall_validity(lg_res, h_res)
    rules = None
    if mode == "PerformanceOnly" and not compliance:
        scen = LG_SCENARIO[cfg.scenario]
        rules = {
            "level": "error" if cfg.test_mode == "SubmissionRun" else "warning",
            "problems": check_llm_run(
                detail, official_settings(spec.mlperf_model, scen), cfg.scenario
            ),
        }
    checks = None
    if compliance == "TEST06":
        res06 = check_test06(
            run_dir / "mlperf_log_accuracy.json", cfg.scenario, spec.eos_id, cfg.output_dtype
        )
        (run_dir / "verify_accuracy.txt").write_text(res06.verify_text())
        checks = res06.to_json()
    summary = {
        "benchmark": cfg.benchmark,
        "scenario": cfg.scenario,
        "mode": compliance or MODE_DIR[mode],
        "compliance": checks,
        "rules": rules,
        "system": cfg.system_name,
        "core_type": cfg.core_type,
        "num_cores": len(cores),
        "policy": policy_name,
        **pool_summary(server, t0),
        "mlperf_model": spec.mlperf_model,
        "dataset": dataset.name,
        "samples": len(dataset),
        "started": started,
        "run_dir": str(run_dir),
        "validity": validity,
        "reasons": reasons,
        "loadgen": lg_res,
        "harness": h_res,
        "notes": notes,
        "config": cfg.values,
        "config_sources": cfg.sources,
    }
    try:
        summary["plots"] = plot_run(run_dir, summary)
        if not summary["plots"]:
            notes.append("no plots: matplotlib is not installed (pip install -e .[plots])")
    except Exception as exc:  # a plotting problem must not cost the run its report
        log.exception("plotting failed")
        notes.append(f"plots failed: {exc!r} (see harness.log)")
    write_report(run_dir, summary)
    return summary


def main_child(spec_path: str) -> int:
    """Entry of the per-test process: ``python -m harness _run_one <spec.json>``."""
    global CHILD_SIGNALS
    CHILD_SIGNALS = ChildSignals().install()
    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])
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
    except Exception:
        log.exception("test failed")
        raise
    return 0
