"""Schedule policies: ordering rules on a real radix tree, without a model."""

import pytest
import torch

from sgl.runtime.mem.chunk_cache import ChunkCache
from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
from sgl.runtime.mem.radix_cache import RadixCache
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.scheduler.policy import LPM_QUEUE_LIMIT, SchedulePolicy
from sgl.runtime.scheduler.req import Req


@pytest.fixture
def tree():
    kv = TokenToKVPool(4096, torch.float32, 1, 2, 1, "cpu")
    return RadixCache(ReqToTokenPool(4, 64, "cpu"), kv)


def _req(rid, ids):
    return Req(rid, ids, SamplingParams(max_new_tokens=4))


def test_lpm_orders_by_cached_prefix(tree):
    tree.insert(list(range(100)), tree.token_to_kv_pool.alloc(100))
    waiting = [_req("none", [500, 501, 502]), _req("long", list(range(80)) + [7]), _req("short", list(range(10)) + [9])]
    SchedulePolicy("lpm", tree).calc_priority(waiting)
    assert [r.rid for r in waiting] == ["long", "short", "none"]


def test_in_batch_prefix_sharing_lets_one_request_go_first(tree):
    shared = list(range(1000, 1064))
    waiting = [_req("a1", shared + [1]), _req("a2", shared + [2]), _req("b1", [7] * 40), _req("a3", shared + [3])]
    SchedulePolicy("lpm", tree).calc_priority(waiting)
    assert [r.rid for r in waiting][:2] == ["a1", "b1"]


def test_long_queue_keeps_arrival_order_but_defers_duplicates(tree):
    groups = [list(range(g * 100, g * 100 + 40)) for g in range(4)]
    waiting = [_req(f"{g}-{i}", groups[g] + [i]) for i in range(40) for g in range(4)]
    assert len(waiting) > LPM_QUEUE_LIMIT
    SchedulePolicy("lpm", tree).calc_priority(waiting)
    assert [r.rid for r in waiting[:4]] == ["0-0", "1-0", "2-0", "3-0"]


def test_cache_aware_policy_falls_back_without_radix():
    kv = TokenToKVPool(64, torch.float32, 1, 2, 1, "cpu")
    assert SchedulePolicy("lpm", ChunkCache(ReqToTokenPool(2, 8, "cpu"), kv)).policy == "fcfs"
    with pytest.raises(ValueError, match="schedule_policy"):
        SchedulePolicy("nope", ChunkCache(ReqToTokenPool(2, 8, "cpu"), kv))


def test_dfs_weight_groups_requests_under_heavy_nodes(tree):
    tree.insert(list(range(50)), tree.token_to_kv_pool.alloc(50))
    tree.insert([900] * 20, tree.token_to_kv_pool.alloc(20))
    waiting = [_req("x", [900] * 10 + [1]), _req("p1", list(range(30)) + [1]), _req("p2", list(range(40)) + [2])]
    SchedulePolicy("dfs-weight", tree).calc_priority(waiting)
    assert {r.rid for r in waiting[:2]} == {"p1", "p2"}
