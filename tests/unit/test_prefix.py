"""Prefix locality: chained block hashes, the engine model's prefix cache, the cache- and
KV-aware policies (on simulator requests and on live LLMRequests), and the multi-turn chat
workload whose turns share their prefixes."""

import random

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.model.arrivals import SimRequest, chat_arrivals
from llmlib.model.engine import BLOCK_TOKENS, BatchingModel, EngineProfile, PrefixCache
from llmlib.model.simulator import EngineSpec, simulate
from llmlib.serving.policies import CacheAware, KVAware, make_policy
from llmlib.serving.prefix import BlockSet, blocks_of, chat_blocks, token_blocks
from llmlib.serving.request import LLMRequest

MS = 1_000_000


def test_block_hashes_are_chained_stable_and_skip_the_partial_block():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 32000, 5 * BLOCK_TOKENS + 7)
    b = a.copy()
    b[3 * BLOCK_TOKENS + 1] += 1  # a change in block 3
    ha, hb = token_blocks(a), token_blocks(b)
    assert len(ha) == 5 and token_blocks(a.tolist()) == ha  # any integer sequence
    assert ha[:3] == hb[:3] and all(x != y for x, y in zip(ha[3:], hb[3:], strict=True))
    assert token_blocks(a[: 3 * BLOCK_TOKENS]) == ha[:3]
    assert token_blocks(a[: BLOCK_TOKENS - 1]) == ()
    # the same block content at another position hashes differently (the chain)
    c = np.concatenate([a[BLOCK_TOKENS : 2 * BLOCK_TOKENS], a[:BLOCK_TOKENS]])
    assert token_blocks(c)[1] != ha[0]
    # values fixed for good: other processes, machines and Python versions agree
    assert token_blocks(range(2 * BLOCK_TOKENS)) == (2080794380272770994, 14087777388968972452)


def test_a_block_set_finds_the_longest_held_prefix():
    rng = random.Random(1)
    for _ in range(200):
        chain = [rng.getrandbits(64) for _ in range(rng.randint(0, 40))]
        s = BlockSet(1000)
        k = rng.randint(0, len(chain))
        s.add(chain[:k])
        assert s.matched(chain) == k
    s = BlockSet(3)
    s.add([1, 2, 3, 4])  # only the 3 most recent stay
    assert len(s) == 3 and s.matched([1, 2, 3, 4]) == 0


def test_the_engine_s_prefix_cache_spares_the_prefill_of_cached_blocks():
    cache = PrefixCache(4)
    assert cache.take([1, 2, 3]) == 0 and cache.take([1, 2, 9]) == 2
    assert cache.take([5, 6]) == 0 and cache.take([1]) == 0  # 1 was evicted (LRU)
    p = EngineProfile(
        name="p",
        step_base_ns=2 * MS,
        step_per_seq_ns=0,
        prefill_per_token_ns=10_000,
        prefix_cache_blocks=100,
    )
    blocks = tuple(range(20))  # 320 tokens of blocks
    firsts = []
    m = BatchingModel(p)
    for k in range(2):
        start = k * 100 * MS
        m.submit(k, start, 330, 1, blocks)
        firsts += [t - start for t, sid, final in m.advance(10**12) if not final]
    assert firsts[0] == 2 * MS + 330 * 10_000  # nothing cached: all of it
    assert firsts[1] == 2 * MS + 10 * 10_000  # 320 cached: the 10 tokens past them
    assert m.cached_tokens == 320 and m.prompt_tokens == 660
    m.submit(2, 300 * MS, 320, 1, blocks)  # all cached: one token still runs
    assert [t - 300 * MS for t, _, f in m.advance(10**12) if not f] == [2 * MS + 10_000]


def test_cache_aware_keeps_a_conversation_on_its_core_and_balances_otherwise():
    p = CacheAware(3)
    conv = [SimRequest(0, 64 * k, 8, tuple(range(k * 4))) for k in (1, 2, 3)]
    first = p.assign([conv[0]], [0, 0, 0])[0]
    loads = [0, 0, 0]
    loads[first] = 2  # busier, but holds the prefix
    assert p.assign([conv[1]], list(loads)) == [first]
    assert p.cache_routed == 1
    fresh = SimRequest(0, 64, 8, tuple(range(1000, 1004)))
    assert p.assign([fresh], [3, 0, 1]) == [1]  # no match: fewest pending
    # imbalanced pool: the fewest pending, match or not
    assert p.assign([conv[2]], [0, 0, 0][:first] + [20] + [0, 0, 0][first + 1 :])[0] != first
    # live requests: blocks from their tokens
    toks = np.arange(4 * BLOCK_TOKENS, dtype=np.uint32)
    live = CacheAware(2)
    a = live.assign([LLMRequest(1, 0, toks, 8)], [0, 0])[0]
    assert live.assign([LLMRequest(2, 1, np.concatenate([toks, toks]), 8)], [0, 0])[0] == a
    assert blocks_of(LLMRequest(3, 0, toks, 8)) == token_blocks(toks)
    cache: dict = {}
    first = blocks_of(LLMRequest(4, 7, toks, 8), cache)
    assert cache[7][1] is first and blocks_of(LLMRequest(5, 7, toks, 8), cache) is first
    other = toks[: 2 * BLOCK_TOKENS].copy()  # the same sample index, other tokens: recomputed
    assert blocks_of(LLMRequest(6, 7, other, 8), cache) == token_blocks(other)


def test_kv_aware_weighs_uncached_blocks_against_load():
    p = KVAware(2)
    req = SimRequest(0, 160, 8, tuple(range(10)))
    assert p.assign([req], [0, 0]) == [0]
    # core 0 holds all 10 blocks; 2 pending there cost 8 (load_weight 4): still cheaper
    assert p.assign([req], [2, 0]) == [0]
    assert p.assign([req], [3, 0]) == [1]  # 12 > 10 uncached blocks on core 1
    assert isinstance(make_policy("kv_aware", 4), KVAware)


def test_chat_turns_share_prefixes_and_arrive_at_a_steady_rate():
    reqs = chat_arrivals(6000, 50.0, seed=3, systems=4, system_len=256, turns=3.0, think_s=2.0)
    assert len(reqs) == 6000 and reqs == chat_arrivals(
        6000, 50.0, seed=3, systems=4, system_len=256, turns=3.0, think_s=2.0
    )
    t = np.array([r.arrival_ns for r in reqs]) / 1e9
    assert (np.diff(t) >= 0).all() and t[0] >= 0
    halves = np.histogram(t, bins=2)[0]
    assert halves[0] == pytest.approx(halves[1], rel=0.1)  # no ramp-up
    assert 6000 / t[-1] == pytest.approx(50.0, rel=0.1)
    assert len({r.blocks[0] for r in reqs}) == 4  # the system prompts' first blocks
    by_start = {}
    for r in reqs:
        assert r.prompt_len // BLOCK_TOKENS == len(r.blocks) and r.prompt_len > 256
        by_start.setdefault(r.blocks[16], []).append(r)  # the first block past the system
    later = [g for g in by_start.values() if len(g) > 1]
    assert later  # conversations with several turns
    for g in later:  # each turn extends the one before
        for a, b in zip(g, g[1:], strict=False):
            assert b.blocks[: len(a.blocks)] == a.blocks
    assert chat_blocks(1, 2, 256, 512)[:16] == chat_blocks(1, 3, 256, 512)[:16]
    assert chat_blocks(1, 2, 256, 512)[16] != chat_blocks(2, 1, 256, 512)[16]
    with pytest.raises(ConfigError):
        chat_arrivals(10, 1.0, turns=0.5)


def test_prefix_aware_policies_hit_the_engine_caches_more_than_round_robin():
    prof = EngineProfile(
        name="cached",
        max_batch_size=16,
        max_num_tokens=2048,
        step_base_ns=5 * MS,
        step_per_seq_ns=100_000,
        prefill_per_token_ns=20_000,
        prefix_cache_blocks=2000,
    )
    reqs = chat_arrivals(3000, 20.0, seed=5, system_len=512, think_s=3.0)
    rates = {}
    for policy in ("round_robin", "least_pending", "cache_aware", "kv_aware"):
        res = simulate(reqs, [EngineSpec(prof, 4)], policy)
        rates[policy] = res.summary()["prefix_hit_rate"]
    assert rates["cache_aware"] > rates["round_robin"] + 0.1
    assert rates["kv_aware"] > rates["round_robin"] + 0.1
    assert rates["cache_aware"] > rates["least_pending"]
