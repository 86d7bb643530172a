"""The KV cache's move from a prefill engine to a decode engine, as a time model: used live by
the disaggregated pool (``llmlib.serving.disagg``) and in virtual time by the simulator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmlib.errors import ConfigError


@dataclass(frozen=True)
class KVTransfer:
    """Moving a prompt's KV cache from a prefill engine to a decode engine: each prefill
    engine sends one at a time (its link busy ``per_token_ns`` per prompt token), and the
    cache lands ``base_ns`` after its last byte leaves (set-up and latency)."""

    base_ns: int = 0
    per_token_ns: int = 0

    def __post_init__(self) -> None:
        if self.base_ns < 0 or self.per_token_ns < 0:
            raise ConfigError("KV transfer: base and per-token times must not be negative")

    @classmethod
    def from_flags(cls, flags: Mapping[str, float]) -> KVTransfer:
        """From a parsed ``base_us:..,per_token_ns:..`` flag string (``KV_TRANSFER_FLAGS``)."""
        return cls(
            int(round(flags.get("base_us", 0.0) * 1000)), int(round(flags.get("per_token_ns", 0.0)))
        )

    def landed_ns(self, done_ns: int, link_free_ns: int, prompt_len: int) -> tuple[int, int]:
        """(when the link is free again, when the KV cache has landed) for a prompt
        prefilled at ``done_ns`` on an engine whose link frees at ``link_free_ns``."""
        free = max(done_ns, link_free_ns) + self.per_token_ns * prompt_len
        return free, free + self.base_ns
