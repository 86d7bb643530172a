"""The base of every traffic policy (``llmlib.serving.policies`` has the policies and what
they share)."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any, ClassVar

from llmlib.errors import ConfigError, UnknownNameError
from llmlib.serving.core import Telemetry
from llmlib.serving.request import LLMRequest

BREAKER_TUNABLES = ("eject_after", "eject_s", "max_eject_s")


class TrafficPolicy:
    name: ClassVar[str] = "abstract"
    tunables: ClassVar[tuple[str, ...]] = ()  # class attributes a flag string may set
    uses_telemetry: ClassVar[bool] = False
    uses_pending_ids: ClassVar[bool] = False  # reads which requests each core still holds
    # the pool's breaker (llmlib.serving.health), set like any tunable: eject a core after this many
    # failures in a row (0: never), for eject_s, doubling after a failed probe up to max
    eject_after: int = 5
    eject_s: float = 10.0
    max_eject_s: float = 300.0

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        self.num_cores = num_cores
        self.telemetry: Sequence[Telemetry] = [Telemetry() for _ in range(num_cores)]

    def bind(self, telemetry: Sequence[Telemetry]) -> None:
        """Read these (live, one per core) from now on."""
        if len(telemetry) != self.num_cores:
            raise ValueError(f"{len(telemetry)} telemetry views for {self.num_cores} cores")
        self.telemetry = telemetry

    def bind_pending(self, views: Sequence[Container[int]]) -> None:
        """The ids each core still holds (live views), for a policy that ``uses_pending_ids``."""
        if len(views) != self.num_cores:
            raise ValueError(f"{len(views)} pending views for {self.num_cores} cores")
        self.pending_views = views

    def configure(self, flags: Mapping[str, Any]) -> None:
        """Set tunables from a parsed flag string; a key this policy has not is an error."""
        for key, value in flags.items():
            if key not in self.tunables and key not in BREAKER_TUNABLES:
                raise UnknownNameError(
                    f"{self.name} policy flag", key, [*self.tunables, *BREAKER_TUNABLES]
                )
            default = getattr(type(self), key)
            value = type(default)(value)
            if value < 0:
                raise ConfigError(f"{self.name} policy flag {key}: {value} is negative")
            setattr(self, key, value)

    def stats(self) -> dict[str, Any]:
        """What the policy did, for reports (empty when it keeps no count)."""
        return {}

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        raise NotImplementedError
