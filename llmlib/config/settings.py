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
from llmlib.config.fields import REPO_ROOT as REPO_ROOT  # (where it is read from)
from llmlib.config.fields import Field
from llmlib.config.shared import SHARED_FIELDS
from llmlib.errors import ConfigError, UnknownNameError

# Each backend's own settings, declared where it lives (``llmlib.config.fields.Section``),
# by module path: ``llmlib`` imports no backend; the table is assembled on first use.
SECTIONS: list[str] = [
    "llmlib.model.engine:EngineSettings",
    "cores.dummy:DummySettings",
    "cores.openai.core:EndpointSettings",
    "cores.openai.disagg:DisaggSettings",
    "cores.routing:RoutingSettings",
    "cores.triton.core:TritonSettings",
    "cores.vllm:VLLMSettings",
    "cores.tiny_llama:TinyLlamaSettings",
    "cores.hf:TransformersSettings",
    "llmlib.serving.raypool:RaySettings",
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


FIELDS = FieldTable(SHARED_FIELDS, SECTIONS)


def canonical(name: str) -> str:
    """A setting's current name (a former one maps to it)."""
    FIELDS._table()
    return FIELDS.aliases.get(name, name)


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
    if field.maximum is not None and out > field.maximum:
        raise ConfigError(f"{what}: {out} is above the maximum {field.maximum:g}")
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
        if f.path and value:
            # tests run in their own directories: paths are fixed where they are given
            value = str(Path(value).expanduser().resolve())
        if f.type == "flags":
            for key in f.path_keys:
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
