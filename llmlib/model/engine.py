"""A model of an LLM serving engine, in virtual time.

Two kinds, one interface (``submit`` / ``advance`` / ``next_wakeup_ns``):

* ``fixed``: every request independent; first token ``ttft`` after arrival, then one token
  every ``tpot``. The ``zero`` profile (both 0) answers at once, for overhead measurement.
* ``batching``: a continuous-batching engine (in the manner of vLLM / TensorRT-LLM in-flight
  batching). At each step boundary waiting requests are admitted while fewer than
  ``max_batch_size`` run; a step processes one token for each decoding sequence plus
  prefill chunks from the admitted prompts, up to ``max_num_tokens`` in all (chunked
  prefill). Step time = ``step_base + step_per_seq * decoding + prefill_per_token * chunk``,
  so prefill time is proportional to prompt tokens and decode step time grows with batch
  size. The step that completes a prompt's prefill yields its first token. With
  ``prefix_cache_blocks``, a prompt's leading blocks already in the engine's prefix cache
  (``PrefixCache``: chained block hashes given with the request) are not prefilled again.

The model knows nothing of wall clocks: callers pass times in. The dummy core drives it in
real time (``advance(now)`` then sleep until ``next_wakeup_ns()``); a simulator drives it in
virtual time. Pure-decode stretches with no arrival or completion are advanced as one span,
so the cost is per event, not per token.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from llmlib.config import flags as fl
from llmlib.config.fields import REPO_ROOT, Section, setting
from llmlib.errors import ConfigError, UnknownNameError
from llmlib.serving.prefix import BLOCK_TOKENS, BlockSet

if TYPE_CHECKING:  # (settings imports the policies, which import this)
    from llmlib.config.settings import Config


@dataclass(frozen=True)
class EngineSettings(Section):
    """The engine model's settings (the dummy core, the serving front's default core, and
    the simulator's replay read them)."""

    group: ClassVar[str] = "engine"
    engine_profile: str = setting("cpu-tiny", "engine model profile of the dummy core")
    engine_profiles_file: str = setting(
        str(REPO_ROOT / "configs" / "engine_profiles.yaml"), "YAML of engine profiles", path=True
    )
    engine_flags: dict[str, Any] = setting(
        {}, "engine model overrides", env="LLMLIB_ENGINE_FLAGS", schema=fl.ENGINE_FLAGS
    )


# (time_ns, seq_id, is_final)
EngineEvent = tuple[int, int, bool]

_NS = {"_ns": 1, "_us": 1_000, "_ms": 1_000_000, "_s": 1_000_000_000}


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """Parameters of a modelled engine. Times are integer nanoseconds."""

    name: str = "custom"
    kind: str = "batching"
    ttft_ns: int = 0
    tpot_ns: int = 0
    max_batch_size: int = 64
    max_num_tokens: int = 8192
    step_base_ns: int = 10_000_000
    step_per_seq_ns: int = 100_000
    prefill_per_token_ns: int = 50_000
    # KV blocks of BLOCK_TOKENS tokens kept for prefix reuse (LRU); 0: no prefix cache
    prefix_cache_blocks: int = 0
    description: str = ""

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.ttft_ns == 0 and self.tpot_ns == 0

    def with_overrides(self, overrides: Mapping[str, Any]) -> EngineProfile:
        """A copy with keys like ``ttft_ms``, ``step_base_us`` or ``max_batch_size`` set."""
        return replace(self, **_normalize(overrides, self.name))


def _normalize(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Map YAML/flag keys with unit suffixes (``_ms``, ``_us``...) to the ``_ns`` fields."""
    names = {f.name for f in fields(EngineProfile)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in names:
            out[key] = value
            continue
        for suffix, scale in _NS.items():
            base = key[: -len(suffix)] if key.endswith(suffix) else None
            if base and f"{base}_ns" in names:
                out[f"{base}_ns"] = int(round(float(value) * scale))
                break
        else:
            valid = sorted(n for n in names if n not in ("name", "description"))
            raise UnknownNameError(f"engine profile key (in {where})", key, valid)
    if out.get("kind", "batching") not in ("fixed", "batching"):
        raise ConfigError(f"engine profile {where}: kind must be 'fixed' or 'batching'")
    for key in ("max_batch_size", "max_num_tokens"):
        if key in out and int(out[key]) < 1:
            raise ConfigError(f"engine profile {where}: {key} must be >= 1, got {out[key]}")
    if int(out.get("prefix_cache_blocks", 0)) < 0:
        raise ConfigError(f"engine profile {where}: prefix_cache_blocks must be >= 0")
    return out


def load_profiles(path: str | Path) -> dict[str, EngineProfile]:
    """Read engine profiles from a YAML mapping ``name -> {key: value}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"engine profile file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of profile name to settings")
    return {
        name: EngineProfile(name=name, **_normalize(body or {}, f"{path}:{name}"))
        for name, body in data.items()
    }


def get_profile(profiles: Mapping[str, EngineProfile], name: str) -> EngineProfile:
    if name not in profiles:
        raise UnknownNameError("engine profile", name, profiles)
    return profiles[name]


def make_model(profile: EngineProfile) -> FixedModel | BatchingModel:
    return FixedModel(profile) if profile.kind == "fixed" else BatchingModel(profile)


class PrefixCache(BlockSet):
    """An engine's KV prefix cache, by block: an LRU of chained block hashes (a block's hash
    covers every token before it, so a hit on block k means blocks 0..k hit too). Blocks are
    matched and inserted when a request is queued, a simplification: a real engine inserts
    them as its prefill computes them, so two requests queued back to back with a new
    shared prefix both count the second as a hit here."""

    def take(self, blocks: Sequence[int]) -> int:
        """How many leading ``blocks`` are cached (up to the first miss); all of them are
        then (most recent)."""
        if self.capacity <= 0:
            return 0
        lru, hit = self._lru, 0  # (the base class's LRU, read directly: a hot loop)
        for b in blocks:
            if b not in lru:
                break
            hit += 1
        self.add(blocks)
        return hit


class FixedModel:
    """Each request on its own: first token at ``arrival + ttft``, final ``tpot`` per token
    later."""

    def __init__(self, profile: EngineProfile) -> None:
        self.ttft, self.tpot = profile.ttft_ns, profile.tpot_ns
        self._heap: list[tuple[int, int, int]] = []  # (time, 0=first/1=final, seq_id)
        self.running = 0

    def submit(
        self,
        seq_id: int,
        arrival_ns: int,
        prompt_len: int,
        output_len: int,
        blocks: Sequence[int] = (),
    ) -> None:
        first = arrival_ns + self.ttft
        heapq.heappush(self._heap, (first, 0, seq_id))
        heapq.heappush(self._heap, (first + (max(output_len, 1) - 1) * self.tpot, 1, seq_id))
        self.running += 1

    def submit_decode(self, seq_id: int, arrival_ns: int, tokens: int) -> None:
        """A sequence prefilled elsewhere (disaggregated serving): ``tokens`` more output
        tokens, one every ``tpot`` from arrival; only its final is an event."""
        heapq.heappush(self._heap, (arrival_ns + max(tokens, 1) * self.tpot, 1, seq_id))
        self.running += 1

    def next_wakeup_ns(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def advance(self, until_ns: int) -> list[EngineEvent]:
        heap, out = self._heap, []
        while heap and heap[0][0] <= until_ns:
            t, kind, sid = heapq.heappop(heap)
            out.append((t, sid, kind == 1))
            self.running -= kind
        return out


class _Seq:
    """A queued sequence; ``prompt_left`` 0: prefilled elsewhere, ``n_out`` tokens to
    decode (disaggregated serving's decode side)."""

    __slots__ = ("sid", "arrival", "prompt_left", "n_out")

    def __init__(self, sid: int, arrival: int, prompt_len: int, n_out: int) -> None:
        self.sid, self.arrival = sid, arrival
        self.prompt_left, self.n_out = max(prompt_len, 0), max(n_out, 1)


class _Plan:
    __slots__ = ("start", "step_ns", "k", "admit", "chunks")

    def __init__(
        self, start: int, step_ns: int, k: int, admit: int, chunks: list[tuple[_Seq, int]]
    ) -> None:
        self.start, self.step_ns, self.k, self.admit, self.chunks = start, step_ns, k, admit, chunks

    @property
    def end(self) -> int:
        return self.start + self.k * self.step_ns


_STALE = object()


class BatchingModel:
    """Continuous batching with chunked prefill; see the module docstring."""

    def __init__(self, profile: EngineProfile) -> None:
        self.p = profile
        self.cache = PrefixCache(profile.prefix_cache_blocks)
        self.now = 0  # time of the last step boundary
        self.steps = 0  # steps executed
        self._waiting: deque[_Seq] = deque()
        self._prefill: deque[_Seq] = deque()
        self._decode: list[tuple[int, int]] = []  # heap of (finish_step, seq_id)
        self._last_arrival = 0
        self.prompt_tokens = self.cached_tokens = 0
        self._planned: object = _STALE  # the next plan, kept until the state changes

    @property
    def running(self) -> int:
        return len(self._prefill) + len(self._decode)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(
        self,
        seq_id: int,
        arrival_ns: int,
        prompt_len: int,
        output_len: int,
        blocks: Sequence[int] = (),
    ) -> None:
        """Queue a request. ``blocks``: chained hashes of its prompt's full blocks of
        ``BLOCK_TOKENS`` tokens; the leading ones in the prefix cache are not prefilled
        again (at least one token always is: it yields the first output token)."""
        arrival = max(arrival_ns, self._last_arrival)  # arrivals are FIFO
        self._last_arrival = arrival
        cached = self.cache.take(blocks) * BLOCK_TOKENS if blocks else 0
        prompt_len = max(prompt_len, 1)
        skip = min(cached, prompt_len - 1)
        self.prompt_tokens += prompt_len
        self.cached_tokens += skip
        self._waiting.append(_Seq(seq_id, arrival, prompt_len - skip, output_len))
        self._planned = _STALE

    def submit_decode(self, seq_id: int, arrival_ns: int, tokens: int) -> None:
        """Queue a sequence prefilled elsewhere (disaggregated serving: its KV cache came
        over): once admitted it decodes ``tokens`` output tokens, one per step, with no
        prefill and no first-token event; its final is the only event."""
        arrival = max(arrival_ns, self._last_arrival)
        self._last_arrival = arrival
        self._waiting.append(_Seq(seq_id, arrival, 0, tokens))
        self._planned = _STALE

    def next_wakeup_ns(self) -> int | None:
        plan = self._plan()
        return None if plan is None else plan.end

    def advance(self, until_ns: int) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        while (plan := self._plan()) is not None:
            if plan.end > until_ns:
                if plan.chunks:
                    break
                k = (until_ns - plan.start) // plan.step_ns
                if k <= 0:
                    break
                plan = _Plan(plan.start, plan.step_ns, k, plan.admit, plan.chunks)
            self._apply(plan, events)
        return events

    def _plan(self) -> _Plan | None:
        """The next step (or pure-decode span) from the state; kept until the state
        changes (a submit or a step), as the simulator asks for it again and again."""
        if self._planned is _STALE:
            self._planned = self._make_plan()
        return self._planned  # type: ignore[return-value]

    def _make_plan(self) -> _Plan | None:
        p, waiting = self.p, self._waiting
        running = self.running
        if running == 0 and not waiting:
            return None
        start = self.now if running else max(self.now, waiting[0].arrival)
        admit = 0
        room = p.max_batch_size - running
        while admit < len(waiting) and admit < room and waiting[admit].arrival <= start:
            admit += 1
        # admitted sequences prefilled elsewhere decode from this step on
        joining = sum(1 for i in range(admit) if waiting[i].prompt_left == 0) if admit else 0
        decoding = len(self._decode) + joining
        budget = p.max_num_tokens - decoding
        chunks: list[tuple[_Seq, int]] = []
        for seq in _chain(self._prefill, waiting, admit):
            if budget <= 0:
                break
            if seq.prompt_left == 0:
                continue
            take = min(seq.prompt_left, budget)
            chunks.append((seq, take))
            budget -= take
        # Here chunks or decoding is non-empty: with nothing decoding the whole token budget
        # (>= 1) is free and at least one sequence is prefilling or admitted.
        prefill_tokens = sum(t for _, t in chunks)
        step_ns = (
            p.step_base_ns + p.step_per_seq_ns * decoding + p.prefill_per_token_ns * prefill_tokens
        )
        step_ns = max(step_ns, 1)
        k = 1
        if not chunks and not joining:  # pure decode: jump to the first completion or arrival
            k = self._decode[0][0] - self.steps
            if waiting and running < p.max_batch_size:
                gap = waiting[0].arrival - start
                k = min(k, max(1, -(-gap // step_ns)))
        return _Plan(start, step_ns, k, admit, chunks)

    def _apply(self, plan: _Plan, events: list[EngineEvent]) -> None:
        self._planned = _STALE
        for _ in range(plan.admit):
            seq = self._waiting.popleft()
            if seq.prompt_left:
                self._prefill.append(seq)
            else:  # its n_out tokens: one in each step from this one
                heapq.heappush(self._decode, (self.steps + seq.n_out, seq.sid))
        self.now = plan.end
        self.steps += plan.k
        now, step, decode = self.now, self.steps, self._decode
        while decode and decode[0][0] <= step:
            events.append((now, heapq.heappop(decode)[1], True))
        for seq, take in plan.chunks:
            seq.prompt_left -= take
            if seq.prompt_left == 0:
                self._prefill.remove(seq)
                events.append((now, seq.sid, False))
                if seq.n_out == 1:
                    events.append((now, seq.sid, True))
                else:
                    heapq.heappush(decode, (step + seq.n_out - 1, seq.sid))


def _chain(prefill: deque[_Seq], waiting: deque[_Seq], admit: int):  # type: ignore[no-untyped-def]
    yield from prefill
    for i in range(admit):
        yield waiting[i]


def profile_from_config(cfg: Config) -> EngineProfile:
    """The profile named by ``cfg.engine_profile`` in ``cfg.engine_profiles_file``, with
    ``cfg.engine_flags`` applied, then the TensorRT-LLM-style runtime knobs
    (``max_batch_size``, ``max_num_tokens``) from ``cfg.runtime_flags``."""
    s = EngineSettings.of(cfg)
    profile = get_profile(load_profiles(s.engine_profiles_file), s.engine_profile)
    overrides = dict(s.engine_flags)
    runtime = cfg.runtime_flags or {}
    for key in ("max_batch_size", "max_num_tokens"):
        if key in runtime:
            overrides[key] = runtime[key]
    return profile.with_overrides(overrides) if overrides else profile
