"""Seeded arrival processes for the simulator: requests with Poisson arrivals and lognormal
prompt and answer lengths (``arrivals``), or chat sessions whose turns share a growing
prefix (``chat_arrivals``, with each prompt's chained block hashes). Same seed, same list."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from llmlib.errors import ConfigError
from llmlib.model.engine import BLOCK_TOKENS
from llmlib.serving.prefix import chat_blocks


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival_ns: int
    prompt_len: int
    output_len: int
    blocks: tuple[int, ...] = ()  # chained hashes of its prompt's blocks (llmlib.serving.prefix)


def _lengths(rng: random.Random, median: int, sigma: float, cap: int) -> int:
    """A log-normal length around ``median`` (``sigma`` 0: exactly the median), 1..cap."""
    if sigma <= 0:
        return max(1, min(cap, median))
    return max(1, min(cap, int(round(median * math.exp(rng.gauss(0.0, sigma))))))


def arrivals(
    n: int,
    rate_per_s: float,
    process: str = "poisson",
    seed: int = 0,
    prompt_len: int = 512,
    output_len: int = 128,
    length_sigma: float = 0.5,
    burst_cv: float = 3.0,
    max_len: int = 8192,
) -> list[SimRequest]:
    """``n`` requests at ``rate_per_s`` on average: ``poisson`` (exponential gaps) or
    ``bursty`` (gamma gaps with coefficient of variation ``burst_cv``: clumps and lulls at
    the same mean rate); prompt and output lengths log-normal around their medians."""
    if n < 0 or rate_per_s <= 0:
        raise ConfigError("arrivals: need n >= 0 and a rate above 0")
    if process not in ("poisson", "bursty"):
        raise ConfigError(f"arrival process must be poisson or bursty, not {process!r}")
    rng = random.Random(seed)
    mean_gap = 1e9 / rate_per_s
    if process == "bursty":
        shape = 1.0 / (burst_cv * burst_cv)
        gap = lambda: rng.gammavariate(shape, mean_gap / shape)  # noqa: E731
    else:
        gap = lambda: rng.expovariate(1.0 / mean_gap)  # noqa: E731
    t = 0.0
    out = []
    for _ in range(n):
        t += gap()
        out.append(
            SimRequest(
                int(t),
                _lengths(rng, prompt_len, length_sigma, max_len),
                _lengths(rng, output_len, length_sigma, max_len),
            )
        )
    return out


def chat_arrivals(
    n: int,
    rate_per_s: float,
    seed: int = 0,
    systems: int = 8,
    system_len: int = 1024,
    turns: float = 4.0,
    user_len: int = 128,
    output_len: int = 128,
    think_s: float = 10.0,
    length_sigma: float = 0.5,
    max_len: int = 16384,
) -> list[SimRequest]:
    """Multi-turn chats with shared prefixes, ``n`` requests at ``rate_per_s`` on average:
    conversations start as a Poisson process, each on one of ``systems`` system prompts of
    ``system_len`` tokens (shared across conversations), with a geometric number of turns
    (mean ``turns``) ``think_s`` apart on average (open loop). Turn t's prompt is the whole
    transcript so far plus a new user message, so it shares every earlier block with turn
    t-1 and its system prompt's blocks with other conversations."""
    if n < 0 or rate_per_s <= 0 or turns < 1 or systems < 1:
        raise ConfigError("chat_arrivals: need n >= 0, rate > 0, turns >= 1, systems >= 1")
    rng = random.Random(seed)
    start_gap = turns / rate_per_s
    p_more = 1.0 - 1.0 / turns
    warm = 3.0 * turns * think_s  # starts from -warm: the rate is steady from time 0
    # first the plan (cheap): per turn (arrival s, conversation, prompt and output tokens)
    turns_at: list[tuple[float, int, int, int]] = []
    convs: list[tuple[int, int]] = []  # per conversation: (system, transcript tokens)
    t, made = -warm, 0
    cutoff = math.inf  # once n have come after 0: the n-th earliest; no later start is sooner
    while t <= cutoff:
        t += rng.expovariate(1.0 / start_gap)
        conv, system = len(convs), rng.randrange(systems)
        at, length = t, system_len
        while True:
            prompt = min(length + _lengths(rng, user_len, length_sigma, max_len), max_len)
            out_len = _lengths(rng, output_len, length_sigma, max_len)
            if at >= 0:
                turns_at.append((at, conv, prompt, out_len))
                made += 1
            length = prompt + out_len
            if rng.random() >= p_more:
                break
            at += rng.expovariate(1.0 / think_s)
        convs.append((system, min(length, max_len)))
        if made >= n and cutoff == math.inf:
            cutoff = sorted(x[0] for x in turns_at)[n - 1] if n else -math.inf
    turns_at.sort()
    # then the blocks, only for the n kept (each conversation's chain made once)
    chains: dict[int, list[int]] = {}
    out: list[SimRequest] = []
    for at, conv, prompt, out_len in turns_at[:n]:
        chain = chains.get(conv)
        if chain is None:
            system, total = convs[conv]
            chain = chains[conv] = chat_blocks(system, conv, system_len, total)
        blocks = tuple(chain[: prompt // BLOCK_TOKENS])
        out.append(SimRequest(int(at * 1e9), prompt, out_len, blocks))
    return out
