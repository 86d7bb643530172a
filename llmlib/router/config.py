"""The routing core's YAML (``configs/routing/*.yaml``): the router artifact and its
settings, the gate's rules, and the expert pools.

::

    router: router.npz            # relative to this file
    precision: int8               # or float (an artifact saved with its float table)
    default_expert: general       # low confidence, empty or unreadable prompts go here
    confidence_threshold: 0.5     # or balanced: the artifact's threshold for this default,
                                  # picked on unseen sources at training (router train)
    top_k: 2
    tie_margin: 0.1               # near-equal top-k experts: the less loaded pool wins
    max_words: 128                # decide on the prompt's first N words (incremental)
    gate:
      - {expert: code, keywords: ["#include", "```python"]}
      - {expert: reasoning, keywords: [solve], regex: "\\d+\\s*[-+*/]\\s*\\d+"}
    pools:
      general: {core_type: dummy, num_cores: 1, flags: {engine_profile: cpu-tiny}}
      code: {core_type: dummy, flags: {engine_profile: cpu-tiny}, fallback: general}

Every expert the router can choose needs a pool; a pool's ``flags`` are harness fields
(checked like command-line flags); a ``fallback`` names another pool that takes a query
the pool fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlib.config.settings import CORE_ALIASES, FIELDS, canonical, read_yaml
from llmlib.errors import ConfigError, UnknownNameError
from llmlib.router.features import MAX_WORDS
from llmlib.router.gate import Gate
from llmlib.router.model import Router
from llmlib.router.weights import load_model

_TOP_KEYS = {
    "router",
    "precision",
    "default_expert",
    "confidence_threshold",
    "top_k",
    "tie_margin",
    "max_words",
    "gate",
    "pools",
}
_POOL_KEYS = {"core_type", "num_cores", "flags", "fallback", "domain"}


@dataclass
class PoolSpec:
    name: str
    core_type: str
    num_cores: int = 0  # 0: what the core type chooses for the workload
    flags: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    domain: str = ""  # what the pool is for, in words (the serving front's /experts)


@dataclass
class RoutingConfig:
    path: Path
    router_path: Path
    precision: str
    default_expert: str
    threshold: float  # (NaN for "balanced": the artifact's, read when the router loads)
    top_k: int
    tie_margin: float
    max_words: int
    gate_rules: list[dict[str, Any]]
    pools: dict[str, PoolSpec]

    def router(self) -> Router:
        model, _ = load_model(self.router_path, self.precision)
        missing = [e for e in model.experts if e not in self.pools]
        if missing:
            raise ConfigError(
                f"{self.path}: the router can choose {', '.join(missing)} but no pool is "
                f"configured for it (pools: {', '.join(self.pools)})"
            )
        chosen = [self.default_expert] + [str(r.get("expert")) for r in self.gate_rules]
        for name in chosen:
            if name not in self.pools:
                raise _unknown(str(self.path), "expert", str(name), list(self.pools))
        backups = {p.fallback for p in self.pools.values()}
        idle = [e for e in self.pools if e not in model.experts and e not in chosen]
        idle = [e for e in idle if e not in backups]  # a fallback's pool is no idle pool
        if idle:
            raise ConfigError(
                f"{self.path}: pools for {', '.join(idle)}, which the router "
                f"({self.router_path.name}: {', '.join(model.experts)}) never chooses, no "
                "gate rule names and no pool falls back to: retrain the router with those "
                "labels (router corpus --add, router train) or remove the pools"
            )
        threshold, rule = self.threshold, "fixed"
        if math.isnan(threshold):
            threshold, rule = self._balanced(model.meta.get("balanced_thresholds")), "balanced"
        router = Router(
            model,
            Gate.from_config(self.gate_rules),
            self.default_expert,
            threshold,
            self.top_k,
            self.tie_margin,
        )
        router.threshold_rule = rule
        return router

    def _balanced(self, table: Any) -> float:
        """The artifact's balanced threshold for this config's default expert."""
        if not isinstance(table, dict) or self.default_expert not in table:
            raise ConfigError(
                f"{self.path}: confidence_threshold is balanced, but {self.router_path.name} "
                f"holds no balanced threshold for {self.default_expert}: retrain it with "
                "python -m harness router train --calibrate source, or give a number"
            )
        return float(table[self.default_expert])


def _unknown(where: str, kind: str, name: str, choices: Any) -> UnknownNameError:
    """UnknownNameError (with did-you-mean) whose message starts with where it is."""
    err = UnknownNameError(kind, name, choices)
    err.args = (f"{where}: {err.args[0]}",)
    return err


def _num(d: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    v = d.get(key, default)
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, not {v!r}") from None


def load_routing_config(path: str | Path) -> RoutingConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"routing config not found: {p} (see configs/routing/default.yaml)")
    d = read_yaml(p)
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    unknown = set(d) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise _unknown(str(p), "key", key, sorted(_TOP_KEYS))
    pools_raw = d.get("pools")
    if not isinstance(pools_raw, dict) or not pools_raw:
        raise ConfigError(f"{p}: needs 'pools', a mapping of expert name to pool")
    pools: dict[str, PoolSpec] = {}
    for name, spec in pools_raw.items():
        where = f"{p}: pool {name}"
        if not isinstance(spec, dict) or "core_type" not in spec:
            raise ConfigError(f"{where}: needs core_type")
        bad = set(spec) - _POOL_KEYS
        if bad:
            raise _unknown(where, "key", sorted(bad)[0], sorted(_POOL_KEYS))
        if spec["core_type"] == "routing":
            raise ConfigError(f"{where}: a routing core cannot be a pool of another")
        flags = spec.get("flags") or {}
        if not isinstance(flags, dict):
            raise ConfigError(f"{where}: flags must be a mapping of harness fields")
        flags = {canonical(str(k)): v for k, v in flags.items()}  # (former names too)
        for k in flags:
            if k not in FIELDS:
                raise _unknown(where, "flag", str(k), sorted(FIELDS))
            if k in ("core_type", "num_cores", "routing_config"):
                raise ConfigError(f"{where}: set {k} on the pool, not in its flags")
        core_type = str(spec["core_type"])
        pools[str(name)] = PoolSpec(
            str(name),
            CORE_ALIASES.get(core_type, core_type),
            _num(spec, "num_cores", int, 0, where),
            dict(flags),
            None if spec.get("fallback") is None else str(spec["fallback"]),
            str(spec.get("domain") or ""),
        )
    for pool in pools.values():
        if pool.fallback is not None:
            if pool.fallback not in pools:
                raise _unknown(f"{p}: pool {pool.name}", "fallback", pool.fallback, list(pools))
            if pool.fallback == pool.name:
                raise ConfigError(f"{p}: pool {pool.name} cannot be its own fallback")
    gate = d.get("gate") or []
    if not isinstance(gate, list):
        raise ConfigError(f"{p}: gate must be a list of rules")
    precision = str(d.get("precision", "int8"))
    if precision not in ("int8", "float"):
        raise _unknown(str(p), "precision", precision, ["int8", "float"])
    balanced = str(d.get("confidence_threshold")).strip().lower() == "balanced"
    if isinstance(d.get("confidence_threshold"), str) and not balanced:
        try:
            float(d["confidence_threshold"])
        except ValueError:
            raise ConfigError(
                f"{p}: confidence_threshold must be a number in [0, 1] or balanced, not "
                f"{d['confidence_threshold']!r}"
            ) from None
    rc = RoutingConfig(
        path=p,
        router_path=(p.parent / str(d.get("router", "router.npz"))).resolve(),
        precision=precision,
        default_expert=str(d.get("default_expert") or next(iter(pools))),
        threshold=math.nan if balanced else _num(d, "confidence_threshold", float, 0.0, str(p)),
        top_k=_num(d, "top_k", int, 2, str(p)),
        tie_margin=_num(d, "tie_margin", float, 0.0, str(p)),
        max_words=_num(d, "max_words", int, MAX_WORDS, str(p)),
        gate_rules=gate,
        pools=pools,
    )
    for key, value, ok in (
        ("confidence_threshold", rc.threshold, balanced or 0.0 <= rc.threshold <= 1.0),
        ("top_k", rc.top_k, rc.top_k >= 1),
        ("tie_margin", rc.tie_margin, rc.tie_margin >= 0.0),
        ("max_words", rc.max_words, rc.max_words >= 1),
    ):
        if not ok:
            want = "in [0, 1] or balanced" if key == "confidence_threshold" else "at least 1"
            want = "0 or more" if key == "tie_margin" else want
            raise ConfigError(f"{p}: {key} must be {want}, not {value}")
    if rc.default_expert not in pools:
        raise _unknown(str(p), "default_expert", rc.default_expert, list(pools))
    Gate.from_config(gate)  # rules checked now, not at the first query
    return rc
