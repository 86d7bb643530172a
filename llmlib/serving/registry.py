"""Backend registry: a lazy ``name -> "module:Class"`` table plus a registering decorator.

The table names every backend that ships with llmlib, so ``--core_type`` can be validated
(and ``--help`` can list the choices) without importing any backend. A backend module is
imported only when its name is chosen, so ``vllm`` or ``tritonclient`` load only for the
core that needs them. Every core registers the one way, ``@register_core("name")`` on its
class (shipped ones too: the table only lets them load lazily); an out-of-tree backend may
instead add a lazy ``"module:Class"`` entry with ``register_core(name, target)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from llmlib.config.settings import CORE_ALIASES
from llmlib.errors import ConfigError, LLMLibError, MissingDependencyError, UnknownNameError
from llmlib.serving.core import LLMCore

CORE_TABLE: dict[str, str] = {
    "dummy": "cores.dummy:DummyCore",
    "routing": "cores.routing:RoutingCore",
    "trtllm_disagg": "cores.openai.disagg:DisaggCore",
    "openai": "cores.openai.core:EndpointCore",
    "triton_grpc": "cores.triton.core:TritonGrpcCore",
    "vllm": "cores.vllm:VLLMCore",
    "tiny_llama": "cores.tiny_llama:TinyLlamaCore",
    "transformers": "cores.hf:TransformersCore",
}

_loaded: dict[str, type[LLMCore]] = {}

# Which pip extra brings the package a backend imports, for the error message.
_EXTRAS = {
    "aiohttp": "http",
    "vllm": "vllm",
    "tritonclient": "triton",
    "tensorrt_llm": "trtllm",
    "torch": "torch",
    "transformers": "model",
}

C = TypeVar("C", bound=type[LLMCore])


def register_core(name: str, target: str | None = None) -> Callable[[C], C]:
    """Register a core class under ``name``.

    As a decorator (``@register_core("dummy")``) it records the class itself; with
    ``target="pkg.module:Class"`` it adds a lazy entry and the decorator is not needed.
    """
    if target is not None:
        CORE_TABLE[name] = target

    def deco(cls: C) -> C:
        cls.name = name
        CORE_TABLE.setdefault(name, f"{cls.__module__}:{cls.__qualname__}")
        _loaded[name] = cls
        return cls

    return deco


def core_names() -> list[str]:
    return sorted(CORE_TABLE)


def cores_that_can(capability: str) -> list[str]:
    """The core types whose capabilities say ``capability`` (``loglikelihood``, say): those
    whose module imports here (a core whose package is missing is not listed)."""
    out = []
    for name in core_names():
        try:
            cls = get_core_class(name)
        except (ImportError, LLMLibError):
            continue
        if getattr(cls.capabilities, capability):
            out.append(name)
    return out


def get_core_class(name: str) -> type[LLMCore]:
    """The class registered as ``name`` (or a former name of it), importing its module on
    first use."""
    name = CORE_ALIASES.get(name, name)
    if name in _loaded:
        return _loaded[name]
    if name not in CORE_TABLE:
        raise UnknownNameError("core type", name, CORE_TABLE)
    module_name, _, attr = CORE_TABLE[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _EXTRAS:
            raise MissingDependencyError(
                f"core type '{name}' needs the '{missing}' package: "
                f"pip install -e .[{_EXTRAS[missing]}]"
            ) from exc
        raise
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, LLMCore)):
        raise ConfigError(f"core type '{name}': {CORE_TABLE[name]} is not an LLMCore subclass")
    _loaded[name] = cls
    return cls
