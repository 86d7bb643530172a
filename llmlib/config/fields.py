"""Settings as fields, and settings *sections*: a backend's (or the engine model's) own
settings, declared where the backend lives as a typed, frozen dataclass::

    @dataclass(frozen=True)
    class TritonSettings(Section):
        group: ClassVar[str] = "triton"
        triton_model_name: str = setting("tensorrt_llm", "the model's name in Triton")

A section's fields are harness settings like any other: flags, YAML, environment overlays,
``--help`` and ``--print_config`` see them; ``TritonSettings.of(cfg)`` reads them from a
resolved ``Config``, typed. ``llmlib.config.settings`` lists the shipped sections by module
path (strings, as the core registry does: ``llmlib`` imports no backend) and assembles the
field table from them on first use.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Field:
    name: str
    type: type | str  # int, float, bool, str, "list" or "flags"
    default: Any
    help: str
    group: str = "harness"
    choices: tuple[str, ...] | None = None
    env: str | None = None  # environment overlay variable
    schema: Mapping[str, builtins.type] | None = None  # keys of a flag-string field
    yaml: bool = True  # may be set from YAML
    minimum: float | None = None
    aliases: tuple[str, ...] = ()  # former names, still accepted (flags, YAML, explicit)
    # a path, made absolute where it is given (tests run in their own directories); for a
    # flag string, the keys that may hold one (made absolute when they name something that
    # exists; otherwise they are names, such as a model id, and left alone)
    path: bool = False
    path_keys: tuple[str, ...] = ()
    maximum: float | None = None


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    env: str | None = None,
    schema: Mapping[str, type] | None = None,
    minimum: float | None = None,
    aliases: tuple[str, ...] = (),
    path: bool = False,
    path_keys: tuple[str, ...] = (),
) -> Any:
    """One field of a ``Section``: its default (a list: a comma-list setting; a dict: a
    flag string, with ``schema``) and help, and what ``Field`` takes besides."""
    meta = {"help": help, "choices": choices, "env": env, "schema": schema, "minimum": minimum,
            "aliases": aliases, "path": path, "path_keys": path_keys}  # fmt: skip
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Section:
    """Base of a settings section (a frozen dataclass whose fields use ``setting``)."""

    group: ClassVar[str] = "harness"

    @classmethod
    def fields(cls) -> list[Field]:
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            m = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
            kind: type | str = (
                "list" if isinstance(default, list)
                else "flags" if isinstance(default, dict)
                else type(default)
            )  # fmt: skip
            out.append(Field(f.name, kind, default, m["help"], cls.group, m["choices"],
                             m["env"], m["schema"], True, m["minimum"], m["aliases"],
                             m["path"], m["path_keys"]))  # fmt: skip
        return out

    @classmethod
    def of(cls, cfg: Any) -> Self:
        """This section's values in a resolved ``Config`` (or any object with ``values``)."""
        return cls(**{f.name: cfg.values[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
