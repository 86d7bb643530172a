"""The settings every run shares, whatever its backend: what to run, LoadGen's, the
workload's, the reports', launching a server, stall timeouts, TensorRT-LLM's flag strings.
A backend's own settings are its section (``llmlib.config.fields.Section``), not here."""

from __future__ import annotations

from typing import Any

from llmlib.config import flags as fl
from llmlib.config.fields import REPO_ROOT, Field
from llmlib.data.loaders import DATASET_FORMATS
from llmlib.serving.policies import POLICY_FLAGS

SCENARIOS = ("offline", "server", "singlestream")
TEST_MODES = ("PerformanceOnly", "AccuracyOnly", "SubmissionRun")


def _f(*args: Any, **kw: Any) -> Field:
    return Field(*args, **kw)


SHARED_FIELDS = [
    # what to run
    _f("benchmarks", "list", ["tiny"], "comma list of benchmarks", "run", yaml=False),
    _f(
        "scenarios",
        "list",
        ["offline", "server"],
        "comma list: offline, server, singlestream",
        "run",
        choices=SCENARIOS,
        yaml=False,
    ),
    _f(
        "test_mode",
        str,
        "PerformanceOnly",
        "PerformanceOnly, AccuracyOnly or SubmissionRun "
        "(performance then accuracy, each in its own process)",
        "run",
        choices=TEST_MODES,
    ),
    _f(
        "compliance_tests",
        str,
        "",
        "comma list of compliance tests to run after the modes (TEST06, TEST07, TEST09), "
        "each in <run>/compliance/<test> with its audit.config (a SubmissionRun adds the "
        "ones its benchmark requires)",
        "run",
        yaml=False,
    ),
    _f("core_type", str, "dummy", "backend core (see 'Backends' in the README)", "run"),
    _f(
        "num_cores",
        int,
        1,
        "cores in the pool, for core types that do not derive it",
        "run",
        minimum=1,
    ),
    _f(
        "traffic_distribution_policy",
        str,
        "",
        "round_robin, least_pending, power_of_two, cache_aware, kv_aware or telemetry "
        "(empty: least_pending for Server/SingleStream, round_robin for Offline)",
        "run",
    ),
    _f("policy_seed", int, 0, "seed of random traffic policies", "run"),
    _f(
        "policy_flags",
        "flags",
        {},
        "the policy's tunables, e.g. load_weight:2 (kv_aware) or ttft_target_ms:500,"
        "migration_gap:0.5 (telemetry); with pd_flags, the prefill pool's",
        "run",
        env="LLMLIB_POLICY_FLAGS",
        schema=POLICY_FLAGS,
    ),
    _f(
        "pd_flags",
        "flags",
        {},
        "prefill/decode disaggregation of dummy cores, prefill:N,decode:M (empty: one shared "
        "pool of num_cores)",
        "run",
        schema=fl.PD_FLAGS,
    ),
    _f("decode_policy", str, "least_pending", "with pd_flags: the decode pool's policy", "run"),
    _f(
        "decode_policy_flags",
        "flags",
        {},
        "with pd_flags: the decode pool's policy tunables (its own thresholds)",
        "run",
        schema=POLICY_FLAGS,
    ),
    _f(
        "kv_transfer",
        "flags",
        {"base_us": 1000.0, "per_token_ns": 3300.0},
        "with pd_flags: KV cache transfer per prefill core's link, base_us:..,per_token_ns:.. "
        "(default: Llama-2-70B FP8, 160 KiB per token over 400 Gb/s, 1 ms set-up)",
        "run",
        schema=fl.KV_TRANSFER_FLAGS,
    ),
    _f(
        "system_name",
        str,
        "cpu-dummy",
        "system name; picks configs/systems/<name>.yaml",
        "run",
        yaml=False,
    ),
    _f(
        "system_config",
        str,
        "",
        "system YAML (default configs/systems/<system_name>.yaml if present)",
        "run",
        yaml=False,
        path=True,
    ),
    _f(
        "config_dir",
        str,
        str(REPO_ROOT / "configs"),
        "where benchmark/system YAML live",
        "run",
        yaml=False,
        path=True,
    ),
    _f(
        "log_dir",
        str,
        "build/logs",
        "results root: <log_dir>/<timestamp>/<system>/<bench>/<scenario>/<mode>",
        "run",
        yaml=False,
        path=True,
    ),
    # LoadGen settings
    _f(
        "server_target_qps",
        float,
        0.0,
        "Server: target queries/s (0: mlperf.conf/user.conf)",
        "loadgen",
        minimum=0,
    ),
    _f(
        "offline_expected_qps",
        float,
        0.0,
        "Offline: expected samples/s (0: mlperf.conf/user.conf)",
        "loadgen",
        minimum=0,
    ),
    _f(
        "single_stream_expected_latency_ms",
        float,
        0.0,
        "SingleStream: expected latency",
        "loadgen",
        minimum=0,
    ),
    _f(
        "min_duration",
        int,
        0,
        "minimum test duration in ms (0: mlperf.conf's)",
        "loadgen",
        minimum=0,
    ),
    _f("min_query_count", int, 0, "minimum queries (0: mlperf.conf's)", "loadgen", minimum=0),
    _f("max_query_count", int, 0, "maximum queries (0: no limit)", "loadgen", minimum=0),
    _f(
        "performance_sample_count",
        int,
        0,
        "QSL performance sample count (0: the smaller of mlperf.conf's and the dataset's)",
        "loadgen",
        minimum=0,
    ),
    _f("user_conf", str, "", "LoadGen user.conf applied after mlperf.conf", "loadgen", path=True),
    _f(
        "audit_config",
        str,
        "",
        "audit.config to apply deliberately (compliance tests); one in "
        "the working directory is reported, never used",
        "loadgen",
        yaml=False,
        path=True,
    ),
    _f(
        "output_dtype",
        str,
        "uint32",
        "dtype of the token ids handed to LoadGen (what the accuracy checker reads)",
        "loadgen",
        choices=("uint32", "int32", "int64"),
    ),
    _f("enable_trace", bool, False, "LoadGen trace log (costs ~25% throughput)", "loadgen"),
    _f(
        "fail_on_errors",
        str,
        "auto",
        "exit 1 when any request of a run failed: true, false, or auto (true for a "
        "SubmissionRun, false otherwise: the report still counts them)",
        "run",
        choices=("auto", "true", "false"),
    ),
    # workload
    _f(
        "dataset_path",
        str,
        "",
        "dataset file (an MLPerf pickle, Parquet or JSON table, or JSONL); empty: the "
        "benchmark's seeded synthetic workload",
        "workload",
        path=True,
    ),
    _f(
        "accuracy_dataset_path",
        str,
        "",
        "dataset for AccuracyOnly runs when it is not the performance set (gpt-oss-120b's "
        "acc_eval_inputs.parquet); empty: --dataset_path",
        "workload",
        path=True,
    ),
    _f(
        "test07_dataset_path",
        str,
        "",
        "dataset for TEST07 (gpt-oss-120b's acc_eval_compliance_gpqa.parquet); empty: the "
        "accuracy dataset",
        "workload",
        path=True,
    ),
    _f(
        "lcb_tests_path",
        str,
        "",
        "LiveCodeBench's test cases (code_generation_lite's JSONL: a file, or a directory of "
        "them), to score the livecodebench rows of deepseek-r1 and gpt-oss-120b",
        "workload",
        path=True,
    ),
    _f(
        "dataset_format",
        str,
        "auto",
        "auto (from the file name), mlperf_pickle, mlperf_parquet, mlperf_json, jsonl, "
        "sharegpt or humaneval "
        "(the last two read their registry package when no path is given)",
        "workload",
        choices=DATASET_FORMATS,
    ),
    _f(
        "dataset_samples",
        int,
        0,
        "use only the first N samples of the dataset (0: all)",
        "workload",
        minimum=0,
    ),
    _f(
        "dataset_multi_turn",
        bool,
        False,
        "ShareGPT: one sample per reply with the conversation so far as its prompt",
        "workload",
    ),
    _f(
        "tokenizer_path",
        str,
        "",
        "local tokenizer (a directory with tokenizer.json, or the file) for text datasets",
        "workload",
        path=True,
    ),
    _f(
        "cache_dir",
        str,
        str(REPO_ROOT / "build" / "cache"),
        "where tokenized datasets are cached ('' for no cache)",
        "workload",
        path=True,
    ),
    _f("sample_count", int, 0, "synthetic samples (0: the benchmark's)", "workload", minimum=0),
    _f("seed", int, 0, "seed of synthetic data and pseudo tokens", "workload"),
    _f(
        "warmup_queries",
        int,
        16,
        "queries sent before LoadGen starts (never seen by it)",
        "workload",
        minimum=0,
    ),
    _f(
        "readiness_timeout_s",
        float,
        60.0,
        "how long cores may take to pass health checks",
        "workload",
        minimum=0,
    ),
    _f("vocab_size", int, 32000, "vocabulary size (synthetic tokens)", "workload", minimum=4),
    # reporting
    _f("progress", bool, True, "tqdm progress bar during the run", "report"),
    _f("progress_interval_s", float, 0.5, "progress refresh period", "report", minimum=0.05),
    _f("show_steady_state_progress", bool, False, "show tokens/s over the last 10 s", "report"),
    _f(
        "gpu_sample_interval_s",
        float,
        0.5,
        "where NVML answers (nvidia-ml-py, a GPU): the GPUs' facts in the report and their "
        "utilisation, memory, clock and power sampled this often on a side thread during the "
        "test (gpu.csv); 0: off",
        "report",
        minimum=0.0,
    ),
    _f(
        "trace_memory",
        bool,
        False,
        "trace the test process's allocations during the test (tracemalloc: slower); the "
        "code sites that grew most go to summary.json's memory_growth and harness.log",
        "report",
    ),
    _f(
        "delivery_tolerance",
        float,
        0.02,
        "Server: a run whose completed rate trails the scheduled QPS by more than this share "
        "is flagged UNDER-DELIVERED in its report, even where LoadGen calls it VALID",
        "run",
        minimum=0,
        maximum=0.5,
    ),
    _f(
        "stop_when_invalid",
        bool,
        False,
        "Server performance runs: stop the test as soon as its verdict is settled INVALID (a "
        "failed request, or more requests past the TTFT/TPOT limit, counting those still "
        "waiting past it, than the p99 allows over the run); the partial results are kept "
        "(harness search's probes use it)",
        "run",
    ),
    _f(
        "plots",
        bool,
        True,
        "PNG plots in each run's report (matplotlib; harness search's probes skip them)",
        "report",
    ),
    _f(
        "stall_timeout_s",
        float,
        0.0,
        "a server that sends no byte for this long fails what it holds (all its open requests "
        "when none of them moved; one request whose stream stopped after it began); 0: auto, "
        "10 x the benchmark's TTFT limit, at least 10 s (openai, trtllm_disagg, triton_grpc)",
        "servers",
        minimum=0,
    ),
    # launching a server for the run (openai core)
    _f(
        "launch_server",
        str,
        "",
        "start this server for the run and stop it after: vllm, trtllm, llamacpp, llmlib "
        "(OpenAI-compatible, for openai) or triton (for triton_grpc; --server_model "
        "a model repository, or the tiny Llama's directory to serve in a Python-backend model)",
        "launch",
        choices=("", "vllm", "trtllm", "llamacpp", "llmlib", "triton"),
    ),
    _f("server_model", str, "", "model the launched server serves (path or name)", "launch"),
    _f("server_port", int, 0, "port of the launched server (0: a free one)", "launch", minimum=0),
    _f("server_args", str, "", "more arguments for the launched server, verbatim", "launch"),
    _f(
        "server_ready_timeout_s",
        float,
        300.0,
        "how long the launched server may take to answer /health",
        "launch",
        minimum=1,
    ),
    # TensorRT-LLM flag strings
    _f(
        "checkpoint_flags",
        "flags",
        {},
        "TensorRT-LLM checkpoint/quantization flags",
        "trtllm",
        env="TRTLLM_CHECKPOINT_FLAGS",
        schema=fl.CHECKPOINT_FLAGS,
    ),
    _f(
        "build_flags",
        "flags",
        {},
        "TensorRT-LLM engine build flags",
        "trtllm",
        env="TRTLLM_BUILD_FLAGS",
        schema=fl.BUILD_FLAGS,
    ),
    _f(
        "runtime_flags",
        "flags",
        {},
        "TensorRT-LLM runtime flags (the dummy core honours max_batch_size and max_num_tokens)",
        "trtllm",
        env="TRTLLM_RUNTIME_FLAGS",
        schema=fl.RUNTIME_FLAGS,
    ),
]
