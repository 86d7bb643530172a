from collections import Counter

import pytest

from llmlib.errors import UnknownNameError
from llmlib.serving.policies import (
    DEFAULT_POLICY,
    LeastPending,
    PowerOfTwo,
    RoundRobin,
    make_policy,
)
from llmlib.serving.request import LLMRequest


def reqs(n):
    return [LLMRequest(i, i, [1], 4) for i in range(n)]


def test_round_robin_cycles_and_carries_over_between_batches():
    p = RoundRobin(3)
    assert p.assign(reqs(4), [0, 0, 0]) == [0, 1, 2, 0]
    assert p.assign(reqs(2), [9, 9, 9]) == [1, 2]


def test_least_pending_fills_the_emptiest_core_and_spreads_a_batch():
    p = LeastPending(3)
    loads = [5, 0, 2]
    out = p.assign(reqs(6), loads)
    assert out[:2] == [1, 1]  # core 1 until it reaches core 2's load
    assert Counter(out) == {1: 4, 2: 2}
    assert loads == [5, 4, 4]


def test_least_pending_picks_what_a_scan_for_the_fewest_would_pick():
    import random

    def scan(loads, n):  # the definition: the fewest pending, the lowest index on a tie
        out = []
        for _ in range(n):
            i = min(range(len(loads)), key=loads.__getitem__)
            loads[i] += 1
            out.append(i)
        return out

    rng = random.Random(0)
    for _ in range(500):
        cores = rng.randint(1, 9)
        loads = [rng.randint(0, 20) for _ in range(cores)]
        n = rng.randint(0, 60)
        got, want = list(loads), list(loads)
        assert LeastPending(cores).assign(reqs(n), got) == scan(want, n), (loads, n)
        assert got == want


def test_power_of_two_is_seeded_and_reproducible():
    a = PowerOfTwo(8, seed=42).assign(reqs(200), [0] * 8)
    b = PowerOfTwo(8, seed=42).assign(reqs(200), [0] * 8)
    c = PowerOfTwo(8, seed=43).assign(reqs(200), [0] * 8)
    assert a == b and a != c


def test_power_of_two_balances_far_better_than_random():
    # with loads tracked, two choices keep the max load within a few of the mean; a single
    # random choice would spread ~ +/- 3 sigma = 3 * sqrt(1000) ~ 95
    loads = [0] * 10
    PowerOfTwo(10, seed=1).assign(reqs(10_000), loads)
    assert sum(loads) == 10_000
    assert max(loads) - min(loads) <= 4


def test_power_of_two_avoids_the_loaded_core():
    loads = [100, 0, 0, 0]
    out = PowerOfTwo(4, seed=0).assign(reqs(30), loads)
    assert 0 not in out


def test_defaults_and_unknown_names():
    assert DEFAULT_POLICY["server"] == "least_pending"
    assert DEFAULT_POLICY["offline"] == "round_robin"
    assert isinstance(make_policy("power_of_two", 2, 0), PowerOfTwo)
    with pytest.raises(UnknownNameError, match="Did you mean 'least_pending'"):
        make_policy("least_pendng", 2)


# --- tunables, telemetry and migrations -------------------------------------------------
import numpy as np  # noqa: E402

from llmlib.errors import ConfigError  # noqa: E402
from llmlib.serving.core import Telemetry  # noqa: E402
from llmlib.serving.policies import POLICY_FLAGS, CacheAware, KVAware, TelemetryPolicy  # noqa: E402


def chat(i, conv, length):
    """A request whose prompt is conversation ``conv``'s transcript of ``length`` tokens."""
    tokens = np.arange(conv * 100_000, conv * 100_000 + length, dtype=np.uint32)
    return LLMRequest(i, i, tokens, 4)


def tel(ttft_ms=None, tpot_ms=None):
    t = Telemetry()
    if ttft_ms is not None:
        t.observe_ttft(int(ttft_ms * 1e6))
    if tpot_ms is not None:
        t.observe_tpot(tpot_ms * 1e6)
    return t


def test_flags_set_a_policy_s_tunables_and_wrong_ones_are_refused():
    p = make_policy("kv_aware", 2, flags={"load_weight": 2})
    assert p.load_weight == 2.0 and KVAware.load_weight == 4.0  # the class keeps its default
    assert POLICY_FLAGS["migration_gap"] is float
    with pytest.raises(UnknownNameError, match="Did you mean 'load_weight'"):
        make_policy("kv_aware", 2, flags={"load_weigth": 2})
    with pytest.raises(UnknownNameError, match="kv_aware policy flag"):
        make_policy("kv_aware", 2, flags={"migration_gap": 1})  # another policy's
    with pytest.raises(ConfigError, match="negative"):
        make_policy("telemetry", 2, flags={"migration_rate": -1})
    with pytest.raises(UnknownNameError):
        make_policy("round_robin", 2, flags={"load_weight": 1})


def test_telemetry_sends_more_to_the_faster_core_and_traffic_returns_to_an_idle_one():
    p = TelemetryPolicy(2)
    p.bind([tel(100, 20), tel(300, 60)])  # core 1 serves three times slower
    loads = [0, 0]
    out = p.assign([LLMRequest(i, i, [1], 4) for i in range(40)], loads)
    assert out.count(0) > 1.5 * out.count(1) and out.count(1) > 0
    # stale averages do not starve a core: idle, it scores below a busy one
    assert p.assign([LLMRequest(99, 99, [1], 4)], [30, 0]) == [1]
    with pytest.raises(ValueError, match="telemetry views"):
        p.bind([Telemetry()])


def test_telemetry_pool_thresholds_push_traffic_off_a_core_over_them():
    over = make_policy("telemetry", 2, flags={"ttft_target_ms": 200, "hot_penalty": 5})
    under = make_policy("telemetry", 2, flags={"ttft_target_ms": 5000, "hot_penalty": 5})
    for p in (over, under):
        p.bind([tel(150, 40), tel(260, 40)])  # core 1 over 200 ms, not over 5000
    reqs_ = [LLMRequest(i, i, [1], 4) for i in range(20)]
    assert over.assign(reqs_, [0, 0]).count(1) < under.assign(reqs_, [0, 0]).count(1)


def test_telemetry_keeps_a_conversation_home_and_migrates_within_its_budget():
    p = make_policy("telemetry", 2, flags={"migration_rate": 0.1, "migration_burst": 1})
    p.assign([chat(0, 7, 160)], [0, 0])
    home = p.sent.index(max(p.sent, key=len))
    # a small gap (a few more pending at home): the next turns stay there
    got = p.assign([chat(1, 7, 200)], [5, 2] if home == 0 else [2, 5])
    assert got == [home] and p.migrations == 0 and p.held == 1
    # home swamped: requests move, but only as often as the budget allows (100
    # conversations whose history is at home; 0.1 token per request, at most 1 kept)
    from llmlib.serving.prefix import token_blocks

    for conv in range(100, 200):
        p.sent[home].add(token_blocks(chat(0, conv, 160).input_tokens))
    loads = [60, 0] if home == 0 else [0, 60]
    moved = sum(p.assign([chat(k, 100 + k, 200)], list(loads)) != [home] for k in range(100))
    assert moved == p.migrations == 10
    assert p.stats() == {"cache_routed": p.cache_routed, "migrations": moved, "held": p.held}


def test_prefix_policies_count_migrations_from_the_home_core():
    for cls in (CacheAware, KVAware):
        p = cls(2)
        p.assign([chat(0, 1, 320)], [0, 0])
        home = 0 if len(p.sent[0]) else 1
        p.assign([chat(1, 1, 336)], [0, 0])  # at home: locality wins with no load
        assert p.stats() == {"cache_routed": 1, "migrations": 0}, cls
        far = [100, 0] if home == 0 else [0, 100]
        p.assign([chat(2, 1, 352)], far)  # home overloaded: both policies leave it
        assert p.stats() == {"cache_routed": 1, "migrations": 1}, cls
