"""Typed configuration with its precedence written down.

    explicit argument > command-line flag > environment overlay > YAML > built-in default

Every setting is a ``Field`` in ``FIELDS``. YAML layers, lowest first: the benchmark file
(``configs/benchmarks/<bench>.yaml``: ``settings`` then ``scenarios.<scenario>``), then the
system file (``configs/systems/<system>.yaml``: ``settings``, ``scenarios.<scenario>``,
``benchmarks.<bench>.settings``, ``benchmarks.<bench>.scenarios.<scenario>``).
Flag-string fields (``key:value,...``) merge key by key across the layers, so
``TRTLLM_RUNTIME_FLAGS=max_batch_size:8`` changes one key and keeps the others.
Each resolved value remembers where it came from (``--print_config``).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from llmlib.config import flags as fl
from llmlib.config.fields import REPO_ROOT, Field
from llmlib.data.loaders import DATASET_FORMATS
from llmlib.errors import ConfigError, UnknownNameError
from llmlib.serving.policies import POLICY_FLAGS

SCENARIOS = ("offline", "server", "singlestream")
TEST_MODES = ("PerformanceOnly", "AccuracyOnly", "SubmissionRun")


def _f(*args: Any, **kw: Any) -> Field:
    return Field(*args, **kw)


_FIELD_LIST = [
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
        "comma list of compliance tests to run after the modes (TEST06), each in "
        "<run>/compliance/<test> with its audit.config",
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
    ),
    _f(
        "config_dir",
        str,
        str(REPO_ROOT / "configs"),
        "where benchmark/system YAML live",
        "run",
        yaml=False,
    ),
    _f(
        "log_dir",
        str,
        "build/logs",
        "results root: <log_dir>/<timestamp>/<system>/<bench>/<scenario>/<mode>",
        "run",
        yaml=False,
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
    _f("user_conf", str, "", "LoadGen user.conf applied after mlperf.conf", "loadgen"),
    _f(
        "audit_config",
        str,
        "",
        "audit.config to apply deliberately (compliance tests); one in "
        "the working directory is reported, never used",
        "loadgen",
        yaml=False,
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
        "dataset file (MLPerf pickle or JSONL of token ids); empty: the benchmark's "
        "seeded synthetic workload",
        "workload",
    ),
    _f(
        "dataset_format",
        str,
        "auto",
        "auto (from the file name), mlperf_pickle, jsonl, sharegpt or humaneval "
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
    ),
    _f(
        "cache_dir",
        str,
        str(REPO_ROOT / "build" / "cache"),
        "where tokenized datasets are cached ('' for no cache)",
        "workload",
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
        "trace_memory",
        bool,
        False,
        "trace the test process's allocations during the test (tracemalloc: slower); the "
        "code sites that grew most go to summary.json's memory_growth and harness.log",
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
# Each backend's own settings, declared where it lives (``llmlib.config.fields.Section``),
# by module path: ``llmlib`` imports no backend; the table is assembled on first use.
SECTIONS: list[str] = [
    "llmlib.model.engine:EngineSettings",
    "cores.dummy:DummySettings",
    "cores.openai.core:EndpointSettings",
    "cores.openai.disagg:DisaggSettings",
    "cores.routing:RoutingSettings",
    "cores.triton_grpc:TritonSettings",
    "cores.vllm:VLLMSettings",
]
CORE_ALIASES: dict[str, str] = {"trtllm_endpoint": "openai"}  # former core type names


class FieldTable(Mapping[str, Field]):
    """Every setting by name: the shared ones above, then each section's (in ``SECTIONS``
    order), assembled on first use; ``aliases`` maps former names to current ones."""

    def __init__(self, shared: list[Field], sections: list[str]) -> None:
        self._shared, self._sections = shared, sections
        self._fields: dict[str, Field] | None = None
        self.aliases: dict[str, str] = {}

    def add_section(self, target: str) -> None:
        """Another section (``"module:Class"``), for an out-of-tree backend."""
        if target not in self._sections:
            self._sections.append(target)
            self._fields = None

    def _table(self) -> dict[str, Field]:
        if self._fields is None:
            fields = list(self._shared)
            for target in self._sections:
                module, _, name = target.partition(":")
                section = getattr(importlib.import_module(module), name)
                fields += section.fields()
            table: dict[str, Field] = {}
            for f in fields:
                if f.name in table:
                    raise ConfigError(f"setting {f.name} is declared twice ({f.group})")
                table[f.name] = f
            self.aliases = {a: f.name for f in fields for a in f.aliases}
            self._fields = table
        return self._fields

    def __getitem__(self, name: str) -> Field:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


FIELDS = FieldTable(_FIELD_LIST, SECTIONS)


def canonical(name: str) -> str:
    """A setting's current name (a former one maps to it)."""
    FIELDS._table()
    return FIELDS.aliases.get(name, name)


# flag-string keys holding paths (made absolute when they name an existing file or
# directory; otherwise they are names, such as a model id, and left alone)
FLAG_PATH_KEYS = {"vllm_engine_flags": ("model", "tokenizer")}
PATH_FIELDS = frozenset(
    {
        "system_config",
        "config_dir",
        "log_dir",
        "user_conf",
        "audit_config",
        "engine_profiles_file",
        "dataset_path",
        "tokenizer_path",
        "cache_dir",
        "disagg_config",
        "routing_config",
    }
)


def coerce_field(field: Field, value: Any, where: str) -> Any:
    what = f"{field.name} (from {where})"
    if field.type == "flags":
        if isinstance(value, str):
            return fl.parse_flag_string(value, field.schema or {}, field.name)
        if isinstance(value, Mapping):
            return fl.check_flag_dict(value, field.schema or {}, field.name)
        raise ConfigError(f"{what}: expected key:value,... or a mapping")
    if field.type == "list":
        items = value if isinstance(value, list) else str(value).split(",")
        items = [str(x).strip() for x in items if str(x).strip()]
        if not items:
            raise ConfigError(f"{what}: empty list")
        if field.choices:
            items = [x.lower() for x in items]
            for x in items:
                if x not in field.choices:
                    raise UnknownNameError(field.name.rstrip("s"), x, field.choices)
        return items
    assert isinstance(field.type, type)
    out = fl.coerce(value, field.type, what)
    if field.choices and out not in field.choices:
        raise UnknownNameError(field.name, str(out), field.choices)
    if field.minimum is not None and out < field.minimum:
        raise ConfigError(f"{what}: {out} is below the minimum {field.minimum:g}")
    return out


class Config:
    """Resolved values with their sources. Attribute access reads values."""

    @property
    def compliance_list(self) -> list[str]:
        """``compliance_tests`` as upper-case names, checked against the known tests."""
        from llmlib.eval.compliance import COMPLIANCE_TESTS

        names = [t.strip().upper() for t in self.compliance_tests.split(",") if t.strip()]
        for t in names:
            if t not in COMPLIANCE_TESTS:
                raise UnknownNameError("compliance test", t, COMPLIANCE_TESTS)
        return names

    def __init__(
        self,
        values: dict[str, Any],
        sources: dict[str, str],
        benchmark: str | None = None,
        scenario: str | None = None,
    ) -> None:
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "benchmark", benchmark)
        object.__setattr__(self, "scenario", scenario)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use replace()")

    def replace(self, **changes: Any) -> Config:
        values, sources = dict(self.values), dict(self.sources)
        for key, v in changes.items():
            k = canonical(key)
            value = coerce_field(FIELDS[k], v, "explicit")
            if k == "core_type":
                value = CORE_ALIASES.get(value, value)
            values[k], sources[k] = value, "explicit"
        return Config(values, sources, self.benchmark, self.scenario)

    def to_json(self) -> str:
        return json.dumps(
            {
                "values": self.values,
                "sources": self.sources,
                "benchmark": self.benchmark,
                "scenario": self.scenario,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Config:
        d = json.loads(text)
        return cls(d["values"], d["sources"], d["benchmark"], d["scenario"])

    def describe(self) -> str:
        """One line per field: name, value, source (for --print_config)."""
        rows = []
        for f in FIELDS.values():
            v = self.values[f.name]
            shown = (
                fl.format_flag_string(v)
                if f.type == "flags"
                else (",".join(v) if f.type == "list" else v)
            )
            rows.append(f"  {f.name:<34} {str(shown)!s:<40} [{self.sources[f.name]}]")
        head = f"# {self.benchmark or '-'} / {self.scenario or '-'}"
        return "\n".join([head, *rows])


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans lines)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _section(data: Mapping[str, Any], path: str, *keys: str) -> dict[str, Any]:
    node: Any = data
    for k in keys:
        if not isinstance(node, Mapping):
            raise ConfigError(f"{path}: '{'.'.join(keys)}' must be a mapping")
        node = node.get(k) or {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: '{'.'.join(keys)}' must be a mapping")
    return dict(node)


def benchmark_names(config_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir) / "benchmarks").glob("*.yaml"))


def yaml_layers(
    config_dir: str | Path,
    system_config: str,
    system_name: str,
    benchmark: str | None,
    scenario: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    """The YAML layers for (benchmark, scenario), lowest precedence first."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if benchmark:
        path = Path(config_dir) / "benchmarks" / f"{benchmark}.yaml"
        data = read_yaml(path)
        layers.append((str(path), _section(data, str(path), "settings")))
        if scenario:
            layers.append((f"{path}:{scenario}", _section(data, str(path), "scenarios", scenario)))
    sys_path = (
        Path(system_config)
        if system_config
        else (Path(config_dir) / "systems" / f"{system_name}.yaml")
    )
    if system_config or sys_path.is_file():
        data = read_yaml(sys_path)
        keys: list[tuple[str, ...]] = [("settings",)]
        if scenario:
            keys.append(("scenarios", scenario))
        if benchmark:
            keys.append(("benchmarks", benchmark, "settings"))
            if scenario:
                keys.append(("benchmarks", benchmark, "scenarios", scenario))
        for k in keys:
            layers.append((f"{sys_path}:{'.'.join(k)}", _section(data, str(sys_path), *k)))
    return layers


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    benchmark: str | None = None,
    scenario: str | None = None,
    env: Mapping[str, str] | None = None,
    explicit: Mapping[str, Any] | None = None,
    validate: Callable[[Config], None] | None = None,
) -> Config:
    """Resolve every field for (benchmark, scenario). ``flags`` are the command-line values
    given (strings), ``explicit`` values passed in code."""
    flags = {canonical(k): v for k, v in (flags or {}).items()}
    explicit = {canonical(k): v for k, v in (explicit or {}).items()}
    env = os.environ if env is None else env
    for name in [*flags, *explicit]:
        if name not in FIELDS:
            raise UnknownNameError("setting", name, FIELDS)
    values = {f.name: f.default for f in FIELDS.values()}
    sources = {f.name: "default" for f in FIELDS.values()}

    def put(name: str, raw: Any, where: str) -> None:
        f = FIELDS[name]
        value = coerce_field(f, raw, where)
        if name == "core_type":
            value = CORE_ALIASES.get(value, value)
        if name in PATH_FIELDS and value:
            # tests run in their own directories: paths are fixed where they are given
            value = str(Path(value).expanduser().resolve())
        if f.type == "flags":
            for key in FLAG_PATH_KEYS.get(name, ()):
                if key in value and Path(value[key]).expanduser().exists():  # a local path
                    value[key] = str(Path(value[key]).expanduser().resolve())
            value = {**values[name], **value}
            where = where if sources[name] == "default" else f"{where} over {sources[name]}"
        values[name], sources[name] = value, where

    # bootstrap: where the YAML lives cannot itself come from YAML
    boot = ("config_dir", "system_config", "system_name")
    for name in boot:
        for raw, where in ((flags.get(name), "flag"), (explicit.get(name), "explicit")):
            if raw is not None:
                put(name, raw, where)
    for where, layer in yaml_layers(
        values["config_dir"], values["system_config"], values["system_name"], benchmark, scenario
    ):
        for key, raw in layer.items():
            name = canonical(key)
            if name not in FIELDS:
                raise UnknownNameError(f"setting in {where}", name, FIELDS)
            if not FIELDS[name].yaml:
                raise ConfigError(f"{where}: '{name}' cannot be set from YAML")
            put(name, raw, f"yaml {where}")
    for f in FIELDS.values():
        if f.env and env.get(f.env):
            put(f.name, env[f.env], f"env {f.env}")
    for name, raw in flags.items():
        put(name, raw, "flag")
    for name, raw in explicit.items():
        put(name, raw, "explicit")
    cfg = Config(values, sources, benchmark, scenario)
    if validate is not None:
        validate(cfg)
    return cfg
