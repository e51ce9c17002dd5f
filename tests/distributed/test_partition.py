"""How weights are split over tensor-parallel ranks (no processes): head shards by KV group, even
and uneven; the checks that refuse a --tp-size a model cannot be split by; the parallel flags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sgl.runtime.distributed.partition import Part, balanced_part, check_tensor_parallel, shard_heads
from sgl.runtime.layers.linear import QKVParallelLinear, RowParallelLinear
from sgl.runtime.server_args import ServerArgs

# SmolLM2-135M: 9 query heads in 3 KV groups of 3, intermediate 1536, hidden 576, vocab 49152
SMOLLM = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536)


def test_default_model_shards():
    one = shard_heads(9, 3, 0, 1)
    assert (one.q, one.kv) == (Part(0, 9), Part(0, 3))
    two = [shard_heads(9, 3, r, 2) for r in range(2)]
    assert [(s.q, s.kv) for s in two] == [(Part(0, 6), Part(0, 2)), (Part(6, 3), Part(2, 1))]
    three = [shard_heads(9, 3, r, 3) for r in range(3)]
    assert [(s.q, s.kv) for s in three] == [(Part(3 * r, 3), Part(r, 1)) for r in range(3)]
    for tp in (1, 2, 3):
        check_tensor_parallel(SMOLLM, tp)


@pytest.mark.parametrize("heads,kv,tp", [(9, 3, 2), (32, 8, 3), (32, 8, 8), (32, 8, 16), (6, 1, 3), (8, 2, 4), (5, 5, 2)])
def test_every_query_head_once_and_with_its_kv_head(heads, kv, tp):
    group = heads // kv
    covered = []
    for rank in range(tp):
        shard = shard_heads(heads, kv, rank, tp)
        q = range(shard.q.start, shard.q.start + shard.q.size)
        covered += q
        # a rank's queries read only the KV heads it stores
        assert {h // group for h in q} <= set(range(shard.kv.start, shard.kv.start + shard.kv.size))
    assert covered == list(range(heads))


def test_balanced_part():
    assert [balanced_part(7, r, 3) for r in range(3)] == [Part(0, 3), Part(3, 2), Part(5, 2)]


@pytest.mark.parametrize("tp,match", [(4, "--tp-size 4 cannot split 9 attention heads over 3 KV heads"),
                                      (6, "--tp-size 6 cannot split"),
                                      (0, "--tp-size must be >= 1")])
def test_unsplittable_tp_size_is_refused(tp, match):
    with pytest.raises(ValueError, match=match):
        check_tensor_parallel(SMOLLM, tp)


def test_intermediate_size_must_divide():
    with pytest.raises(ValueError, match="intermediate_size 1536 is not divisible by --tp-size 5"):
        check_tensor_parallel(SimpleNamespace(num_attention_heads=10, num_key_value_heads=5, intermediate_size=1536), 5)


def test_uneven_qkv_and_output_projection_recombine():
    """At tp 2 on 9 heads / 3 KV heads the ranks' q/k/v slices are the checkpoint's, and the
    output projection over each rank's heads sums to the unsplit one."""
    torch.manual_seed(0)
    hidden, head = 12, 4
    full = {s: torch.randn(n * head, hidden) for s, n in (("q", 9), ("k", 3), ("v", 3))}
    o_weight = torch.randn(hidden, 9 * head)
    x = torch.randn(2, hidden)
    attn_out = torch.randn(2, 9 * head)
    partial = []
    for rank in range(2):
        qkv = QKVParallelLinear(hidden, head, 9, 3, bias=False, tp_rank=rank, tp_size=2)
        for shard in "qkv":
            qkv.weight_loader(qkv.weight, full[shard], shard)
        q, k, v = qkv(x).split([qkv.q_size, qkv.kv_size, qkv.kv_size], dim=-1)
        heads, kvs = (slice(0, 24), slice(0, 8)) if rank == 0 else (slice(24, 36), slice(8, 12))
        torch.testing.assert_close(q, F.linear(x, full["q"][heads]))
        torch.testing.assert_close(torch.cat([k, v], -1), torch.cat([F.linear(x, full["k"][kvs]), F.linear(x, full["v"][kvs])], -1))
        o_proj = RowParallelLinear(9 * head, hidden, bias=False, reduce_results=False, tp_rank=rank, tp_size=2,
                                   input_part=qkv.q_part)
        o_proj.weight_loader(o_proj.weight, o_weight)
        partial.append(o_proj(attn_out[:, heads]))
    torch.testing.assert_close(partial[0] + partial[1], F.linear(attn_out, o_weight))


# ---- flags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(tp_size=3, nnodes=2, dist_init_addr="127.0.0.1:5000"), "--tp-size 3 must be a multiple of --nnodes 2"),
    (dict(tp_size=2, nnodes=2), "--nnodes 2 needs --dist-init-addr"),
    (dict(tp_size=2, nnodes=2, node_rank=2, dist_init_addr="h:1"), "--node-rank must be in"),
    (dict(tp_size=2, dist_init_addr="nohost"), "--dist-init-addr must be HOST:PORT"),
    (dict(tp_size=2, dist_init_addr="h:99999"), "--dist-init-addr must be HOST:PORT"),
    (dict(tp_size=0), "--tp-size must be positive"),
    (dict(tp_size=2, enable_hip_attention=True), "--tp-size 2 is not supported with HiP attention"),
])
def test_parallel_flags_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServerArgs(device="cpu", **kwargs)


def test_multi_node_flags_accepted():
    sa = ServerArgs(device="cpu", tp_size=4, nnodes=2, node_rank=1, dist_init_addr="[::1]:29500")
    assert (sa.tp_size, sa.nnodes, sa.node_rank) == (4, 2, 1)


def test_engine_refuses_unsplittable_model_before_starting(default_gguf):
    from sgl.runtime.entry.engine import Engine

    with pytest.raises(ValueError, match="--tp-size 4 cannot split 9 attention heads"):
        Engine(model_path=default_gguf, tp_size=4, device="cpu")
    with pytest.raises(ValueError, match="--node-rank 1: only node 0 serves requests"):
        Engine(model_path=default_gguf, tp_size=2, nnodes=2, node_rank=1, dist_init_addr="127.0.0.1:1", device="cpu")
