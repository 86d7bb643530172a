from collections import Counter

import pytest

from llmlib.errors import UnknownNameError
from llmlib.policies import DEFAULT_POLICY, LeastPending, PowerOfTwo, RoundRobin, make_policy
from llmlib.request import LLMRequest


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
