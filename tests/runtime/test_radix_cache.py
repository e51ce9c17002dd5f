"""Radix cache unit tests: match/split, insert dedup, locks, LRU eviction, finished/unfinished requests."""

import random

import pytest
import torch

from sgl.runtime.mem.chunk_cache import ChunkCache
from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
from sgl.runtime.mem.radix_cache import RadixCache


@pytest.fixture
def pools():
    return ReqToTokenPool(8, 64, "cpu"), TokenToKVPool(256, torch.float32, 1, 2, 1, "cpu")


def _slots(pool, n):
    s = pool.alloc(n)
    assert s is not None
    return s


def test_match_splits_node(pools):
    _, kv = pools
    tree = RadixCache(pools[0], kv)
    v = _slots(kv, 6)
    assert tree.insert([1, 2, 3, 4, 5, 6], v) == 0
    got, node = tree.match_prefix([1, 2, 3, 9])
    assert got.tolist() == v[:3].tolist()
    assert node.key == [1, 2, 3] and len(node.children) == 1
    assert tree.total_size() == 6
    tree.check_integrity()


def test_insert_returns_cached_length_and_branches(pools):
    _, kv = pools
    tree = RadixCache(pools[0], kv)
    tree.insert([1, 2, 3, 4], _slots(kv, 4))
    dup = _slots(kv, 5)
    assert tree.insert([1, 2, 3, 7, 8], dup) == 3
    assert tree.total_size() == 6
    got, _ = tree.match_prefix([1, 2, 3, 7, 8])
    assert len(got) == 5
    tree.check_integrity()


def test_lock_protects_from_eviction(pools):
    _, kv = pools
    tree = RadixCache(pools[0], kv)
    tree.insert([1, 2, 3], _slots(kv, 3))
    tree.insert([5, 6], _slots(kv, 2))
    _, node = tree.match_prefix([1, 2, 3])
    tree.inc_lock_ref(node)
    assert tree.protected_size() == 3 and tree.evictable_size() == 2
    before = kv.available_size()
    assert tree.evict(100) == 2
    assert kv.available_size() == before + 2
    assert tree.total_size() == 3
    tree.dec_lock_ref(node)
    assert tree.evictable_size() == 3
    tree.check_integrity()


def test_lru_order(pools):
    _, kv = pools
    tree = RadixCache(pools[0], kv)
    tree.insert([1, 1], _slots(kv, 2))
    tree.insert([2, 2], _slots(kv, 2))
    tree.insert([3, 3], _slots(kv, 2))
    tree.match_prefix([1, 1])  # touch: [2, 2] is now the oldest
    tree.evict(1)
    assert tree.match_prefix([2, 2])[0].numel() == 0
    assert tree.match_prefix([1, 1])[0].numel() == 2
    tree.check_integrity()


def test_evict_cascades_to_parent(pools):
    _, kv = pools
    tree = RadixCache(pools[0], kv)
    tree.insert([1, 2, 3, 4], _slots(kv, 4))
    dup = _slots(kv, 3)
    assert tree.insert([1, 2, 9], dup) == 2
    kv.free(dup[:2])
    free0 = kv.available_size()
    assert tree.evict(5) == 5  # [3,4] and [9], then the now-childless [1,2]
    assert tree.total_size() == 0 and kv.available_size() == free0 + 5


class _Req:
    def __init__(self, ids, out, row, kv_len):
        self.origin_input_ids, self.output_ids = ids, out
        self.req_pool_idx, self.kv_allocated_len = row, kv_len
        self.prefix_indices = torch.empty(0, dtype=torch.int64)
        self.last_node = None
        self.fill_ids = ids + out


@pytest.mark.parametrize("cache_cls", [RadixCache, ChunkCache])
def test_finished_request_frees_or_caches_everything(pools, cache_cls):
    r2t, kv = pools
    tree = cache_cls(r2t, kv)
    row = r2t.alloc(1)[0]
    ids, out = [1, 2, 3, 4], [5, 6]
    slots = _slots(kv, 5)  # prompt + first output token (the last one has no KV)
    r2t.write(row, 0, slots)
    req = _Req(ids, out, row, 5)
    tree.cache_finished_req(req)
    assert kv.available_size() + tree.total_size() == kv.size
    assert r2t.available_size() == r2t.size
    if cache_cls is RadixCache:
        assert tree.match_prefix([1, 2, 3, 4, 5, 6])[0].numel() == 5


def test_finished_before_its_first_token_keeps_the_cached_prompt(pools):
    """A request aborted right after prefill (no output token) whose whole prompt was already put in
    the tree: finishing caches one token fewer than its prefix, and must not free the tree's slots."""
    r2t, kv = pools
    tree = RadixCache(r2t, kv)
    row = r2t.alloc(1)[0]
    ids = [1, 2, 3, 4]
    r2t.write(row, 0, _slots(kv, 4))
    req = _Req(ids, [], row, 4)
    tree.cache_unfinished_req(req)  # the prompt enters the tree at prefill
    assert len(req.prefix_indices) == 4
    tree.cache_finished_req(req)  # caches ids[:3]; ids[3]'s slot is still the tree's
    assert kv.available_size() + tree.total_size() == kv.size
    assert tree.total_size() == 4 and tree.protected_size() == 0
    tree.check_integrity()


def test_random_operations_keep_integrity(pools):
    r2t, kv = pools
    tree = RadixCache(r2t, kv)
    rng = random.Random(0)
    for _ in range(200):
        key = [rng.randint(0, 3) for _ in range(rng.randint(1, 8))]
        got, node = tree.match_prefix(key)
        new = len(key) - len(got)
        if new and kv.available_size() < new:
            tree.evict(new)
        if new and kv.available_size() >= new:
            value = torch.cat([got, kv.alloc(new)])
            cached = tree.insert(key, value)
            kv.free(value[len(got):cached])
        tree.check_integrity()
        assert kv.available_size() + tree.total_size() == kv.size
