"""HiP KV offloading (runtime/mem/hip_offload.py): the LRU token caches, the offloaded pool, and the
engine end to end on the default model (offloaded greedy output equal to the on-device pool's, with
caches small enough to evict), on CPU. The GPU run (pinned host memory read in place, CUDA graphs)
is scripts/gpu/hip_offload.sh."""

from __future__ import annotations

import json

import pytest
import torch

from sgl.runtime.mem.hip_offload import HipOffloadKVPool, LruTokenCache
from sgl.runtime.server_args import ServerArgs
from sgltest.runtime_helpers import run_all, submit

from test_hip_attention import passkey_prompt, small_config


def _cache(size=4, slots=20, with_v=True):
    return LruTokenCache(size, slots, (2, 3), torch.float32, torch.float32, with_v, "cpu")


def _host(slots=20):
    k = torch.arange(slots * 6, dtype=torch.float32).view(slots, 2, 3)
    return k, -k


def _touch(cache, tokens):
    cache.touch[torch.tensor(tokens)] = 1


def _cached(cache):
    return {int(s): int(cache.page[s]) for s in (cache.page[:-1] >= 0).nonzero().flatten()}


def test_lru_inserts_touched_tokens_and_copies_their_rows():
    c = _cache()
    k, v = _host()
    _touch(c, [3, 7, 11])
    c.update(k, v)
    got = _cached(c)
    assert set(got) == {3, 7, 11}
    for s, row in got.items():
        assert torch.equal(c.bank_k[row], k[s]) and torch.equal(c.bank_v[row], v[s])
        assert int(c.owner[row]) == s
    assert int(c.misses) == 3 and int(c.hits) == 0
    assert int(c.touch.sum()) == 0  # cleared for the next step


def test_lru_evicts_the_least_recently_used_and_keeps_this_steps_hits():
    c = _cache(size=4)
    k, v = _host()
    _touch(c, [1, 2, 3, 4])
    c.update(k, v)
    _touch(c, [1, 2])  # hits: 1 and 2 are now the most recent
    c.update(k, v)
    assert int(c.hits) == 2
    _touch(c, [1, 9, 10])  # 1 hits; 9 and 10 replace 3 and 4 (least recently used)
    c.update(k, v)
    assert set(_cached(c)) == {1, 2, 9, 10}
    # more misses than rows not used this step: this step's hits stay, the rest is left out
    _touch(c, [1, 2, 12, 13, 14, 15])
    c.update(k, v)
    cached = set(_cached(c))
    assert {1, 2} <= cached and len(cached) == 4 and len(cached & {12, 13, 14, 15}) == 2
    for s, row in _cached(c).items():
        assert torch.equal(c.bank_k[row], k[s])


def test_a_write_drops_the_slot_and_a_stale_owner_is_not_unlinked():
    pool = HipOffloadKVPool(30, torch.float32, 2, 4, 2, "cpu", mask_cache_tokens=3, sa_cache_tokens=3)
    loc = torch.tensor([5, 6, 7])
    pool.set_kv_buffer(0, loc, torch.ones(3, 2, 4), torch.ones(3, 2, 4))
    sa = pool.sa_caches[0]
    sa.touch[loc] = 1
    pool.update_caches(0)
    row5 = int(sa.page[5])
    assert row5 >= 0 and torch.equal(sa.bank_k[row5], torch.ones(2, 4))
    # slot 5 freed and written again (another request's token): never served stale
    pool.set_kv_buffer(0, torch.tensor([5]), 2 * torch.ones(1, 2, 4), 2 * torch.ones(1, 2, 4))
    assert int(sa.page[5]) == -1
    sa.touch[torch.tensor([5])] = 1
    pool.update_caches(0)
    assert torch.equal(sa.bank_k[int(sa.page[5])], 2 * torch.ones(2, 4))
    stats = pool.cache_stats()
    assert stats["sa_cache_misses"] == 4 and stats["mask_cache_hits"] == 0


def test_dense_layers_get_twice_the_cache():
    pool = HipOffloadKVPool(100, torch.float32, 2, 4, 3, "cpu", mask_cache_tokens=8, sa_cache_tokens=4,
                            dense_layers=[0])
    assert [c.size for c in pool.mask_caches] == [16, 8, 8]
    assert [c.size for c in pool.sa_caches] == [8, 4, 4]


def test_offload_flags_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="--enable-hip-attention"):
        ServerArgs(enable_hip_offload=True)
    with pytest.raises(ValueError, match="--hip-max-sa-cache-token-size"):
        ServerArgs(enable_hip_attention=True, enable_hip_offload=True, hip_max_sa_cache_token_size=0)
    monkeypatch.setenv("DEBUG_ONLINE", "1")
    with pytest.raises(ValueError, match="DEBUG_ONLINE"):
        ServerArgs(enable_hip_attention=True, enable_hip_offload=True)


@pytest.mark.parametrize("kv_dtype", ["auto", "fp8_e5m2"])
def test_offloaded_greedy_equals_the_device_pool(make_scheduler, tokenizer, kv_dtype):
    """Pass-key prompts of ~770 tokens, HiP with 64-token windows, caches of 48 (mask) and 32 (SA)
    tokens, so rows are evicted on every refresh; chunked prefill; requests decode together."""
    keys = [52231 + 2 * i for i in range(3)]
    prompts = [passkey_prompt(tokenizer, k, d) for k, d in zip(keys, (0.2, 0.5, 0.8))]
    cfg = json.dumps(small_config(window=64, sink=16, refresh=(8, 4, 2), bq=64))
    common = dict(enable_hip_attention=True, hip_attention_config=cfg, kv_cache_dtype=kv_dtype,
                  chunked_prefill_size=256)

    def greedy(sched):
        for i, ids in enumerate(prompts):
            submit(sched, tokenizer, str(i), ids, max_new_tokens=10, temperature=0, ignore_eos=True)
        out = run_all(sched)
        return [out[str(i)]["ids"] for i in range(len(prompts))]

    device_pool = greedy(make_scheduler(**common))
    off = make_scheduler(enable_hip_offload=True, hip_max_mask_cache_token_size=48, hip_max_sa_cache_token_size=32,
                         **common)
    pool = off.model_runner.token_to_kv_pool
    assert isinstance(pool, HipOffloadKVPool)
    assert greedy(off) == device_pool
    stats = pool.cache_stats()
    assert stats["mask_cache_hits"] > 0 and stats["mask_cache_misses"] > 0
    assert stats["sa_cache_hits"] > 0 and stats["sa_cache_misses"] > 0
    off.check_integrity()


def test_offloaded_pool_is_bounded_by_host_memory(make_scheduler):
    cfg = json.dumps(small_config())
    with pytest.raises(ValueError, match="host memory"):
        make_scheduler(enable_hip_attention=True, hip_attention_config=cfg, enable_hip_offload=True,
                       max_total_tokens=1 << 40)
