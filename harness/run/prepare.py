"""Before a test: everything built and checked from its settings (the pool of cores, the
dataset, LoadGen's TestSettings) and the checks the CLI makes before any process starts.
``prepare`` gathers what one test needs into a ``TestPlan`` (``harness.run.runner`` runs it)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from llmlib.errors import ConfigError
from llmlib.eval.rules import MAX_SCHEDULED_QUERIES, check_schedule, official_settings
from llmlib.model.engine import profile_from_config
from llmlib.serving.core import LLMCore
from llmlib.serving.disagg import PDServer
from llmlib.serving.kv_transfer import KVTransfer
from llmlib.serving.policies import DEFAULT_POLICY, make_policy
from llmlib.serving.pool import LLMServer, Pool
from llmlib.serving.registry import get_core_class
from llmlib.serving.request import LLMRequest

LG_SCENARIO = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream"}
MODE_DIR = {
    "PerformanceOnly": "performance",
    "AccuracyOnly": "accuracy",
    "FindPeakPerformance": "findpeak",
}  # (the last: harness search --search_algorithm)


@dataclass
class TestPlan:
    """One test, ready to run: its settings resolved, its dataset read, its pool built (the
    cores not yet checked for health), the notes gathered so far for its report."""

    cfg: Config
    mode: str  # PerformanceOnly or AccuracyOnly
    compliance: str | None  # a compliance test's name, or None
    run_dir: Path
    spec: BenchmarkSpec
    dataset: Dataset
    policy_name: str
    server: Pool
    started: str  # local time, for the report
    notes: list[str] = field(default_factory=list)

    @property
    def stream(self) -> bool:
        return self.cfg.scenario != "offline"

    @property
    def label(self) -> str:
        return f"{self.cfg.benchmark} {self.cfg.scenario} {self.compliance or MODE_DIR[self.mode]}"

    @property
    def perf_run(self) -> bool:
        """A performance run proper (not accuracy, not a compliance test)."""
        return self.mode == "PerformanceOnly" and not self.compliance


def prepare(cfg: Config, mode: str, run_dir: Path, compliance: str | None = None) -> TestPlan:
    """Resolve what is left of the settings (a compliance test's audit.config, the stall
    timeout), read the dataset and build the pool."""
    if compliance:
        cfg = cfg.replace(audit_config=str(compliance_audit_config(cfg, compliance)))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    spec = load_benchmark(cfg.config_dir, cfg.benchmark).for_mode(mode, compliance)
    notes: list[str] = []
    cfg = with_stall_timeout(cfg, spec, notes)
    dataset = build_dataset(cfg, spec)
    notes += getattr(dataset, "notes", [])
    policy_name = cfg.traffic_distribution_policy or DEFAULT_POLICY[cfg.scenario]
    server = build_server(cfg, policy_name)
    return TestPlan(cfg, mode, compliance, run_dir, spec, dataset, policy_name, server,
                    started, notes)  # fmt: skip


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
STALL_WATCHED = ("openai", "trtllm_disagg", "triton_grpc", "routing")


def check_datasets(configs: list[Config]) -> None:
    """Read every dataset a run will use, once per benchmark, before any process starts: a
    broken line, an empty file, a missing column or a token id past the vocabulary is then
    one line and exit 2, with no run directory made (the tests' processes read the
    tokenized cache this leaves)."""
    seen: set[tuple[str, str]] = set()
    for base in configs:
        tests = required_compliance(base)
        variants = [base, run_config(base, "AccuracyOnly", None)]
        if "TEST07" in tests:
            variants.append(run_config(base, "PerformanceOnly", "TEST07"))
        for cfg in variants:
            if not (cfg.dataset_path or cfg.dataset_format in TEXT_FORMATS):
                continue
            if (cfg.benchmark, cfg.dataset_path) not in seen:
                seen.add((cfg.benchmark, cfg.dataset_path))
                build_dataset(cfg, load_benchmark(cfg.config_dir, cfg.benchmark))


def build_dataset(cfg: Config, spec: BenchmarkSpec) -> Dataset:
    if cfg.dataset_path or cfg.dataset_format in TEXT_FORMATS:
        return load_dataset(
            cfg.dataset_path,
            cfg.dataset_format,
            spec.family,
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
    """A compliance test's audit.config: the benchmark family's own
    (``compliance/<test>/<family>/audit.config``, as MLPerf lays out TEST07 and TEST09),
    else the test's (``compliance/<test>/audit.config``)."""
    family = load_benchmark(cfg.config_dir, cfg.benchmark).family
    top = Path(cfg.config_dir) / "compliance" / test
    for path in (top / family / "audit.config", top / "audit.config"):
        if path.is_file():
            return path
    have = sorted(p.parent.name for p in top.glob("*/audit.config"))
    raise ConfigError(
        f"{test}: no audit.config for {cfg.benchmark} under {top}"
        + (f" ({test} is defined for: {', '.join(have)})" if have else "")
    )


def run_config(cfg: Config, mode: str, compliance: str | None) -> Config:
    """``cfg`` for one run: an accuracy run reads ``accuracy_dataset_path`` and TEST07
    ``test07_dataset_path`` (then the accuracy dataset) when they are given."""
    path = ""
    if compliance == "TEST07":
        path = cfg.test07_dataset_path or cfg.accuracy_dataset_path
    elif mode == "AccuracyOnly" and not compliance:
        path = cfg.accuracy_dataset_path
    return cfg.replace(dataset_path=path) if path else cfg


def required_compliance(cfg: Config) -> list[str]:
    """The compliance tests a run takes: ``--compliance_tests``, and for a SubmissionRun
    also the ones its benchmark requires (its YAML's ``compliance``)."""
    tests = cfg.compliance_list
    if cfg.test_mode == "SubmissionRun":
        tests = [*tests, *load_benchmark(cfg.config_dir, cfg.benchmark).compliance]
    return list(dict.fromkeys(tests))
