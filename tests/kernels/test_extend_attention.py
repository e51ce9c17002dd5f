"""Extend attention vs the float64 oracle: mixed prefix/new lengths in one batch, scattered slots."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import attn_tol, rel_err
from sgl.kernels import reference as R
from sgl.kernels.extend_attention import extend_attention, plan_extend_tiles
from sgl.kernels.utils import interpreting

BLOCK_M = 16 if interpreting() else 128


def _case(device, gen, prefix, extend, heads, kv_heads, head_dim, dtype, kv_dtype=None, fused_qkv=False):
    kv_dtype = kv_dtype or dtype
    total = [p + e for p, e in zip(prefix, extend)]
    slots = sum(total) + 40
    table, rows = R.random_req_to_token(total, rows=len(total) + 2, max_ctx=max(total) + 3, num_slots=slots, generator=gen)
    k_buf = torch.randn(slots + 1, kv_heads, head_dim, generator=gen).to(kv_dtype).to(device)
    v_buf = torch.randn(slots + 1, kv_heads, head_dim, generator=gen).to(kv_dtype).to(device)
    t = sum(extend)
    widths = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    if fused_qkv:  # q/k/v as column slices of one projection output: rows strided, as in the model
        qkv = torch.randn(t, sum(widths), generator=gen).to(dtype).to(device)
        q, k, v = qkv.split(widths, dim=-1)
    else:
        q, k, v = (torch.randn(t, w, generator=gen).to(dtype).to(device) for w in widths)
    q, k, v = q.view(t, heads, head_dim), k.view(t, kv_heads, head_dim), v.view(t, kv_heads, head_dim)
    starts = torch.tensor([sum(extend[:i]) for i in range(len(extend))], device=device)
    lens = dict(idx=torch.tensor(rows, device=device), prefix=torch.tensor(prefix, device=device),
                extend=torch.tensor(extend, device=device), starts=starts)
    return q, k, v, k_buf, v_buf, table.to(device), lens


def _run_and_ref(q, k, v, k_buf, v_buf, table, lens, scale=0.25):
    tiles = plan_extend_tiles(lens["extend"].tolist(), lens["prefix"].tolist(), BLOCK_M, q.device)
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    extend_attention(q, k, v, out, k_buf, v_buf, table, lens["idx"], lens["prefix"], lens["extend"], lens["starts"],
                     tiles, scale)
    ref = R.extend_attention_ref(q, k, v, k_buf, v_buf, table, lens["idx"], lens["prefix"], lens["extend"], scale)
    return out, ref


# prefix 0 and > 0, prefixes on and off block boundaries, one-token extends, tiles cut mid-request
MIXED = ([0, 5, 16, 33, 0], [1, 17, 32, 3, 20])


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 4, 64), (8, 2, 128), (4, 1, 80)])
def test_extend_matches_oracle(device, gen, heads, kv_heads, head_dim):
    case = _case(device, gen, *MIXED, heads, kv_heads, head_dim, torch.float32)
    out, ref = _run_and_ref(*case)
    assert rel_err(out, ref) < attn_tol(torch.float32, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_extend_16bit_with_fused_qkv_layout(device, gen, dtype):
    case = _case(device, gen, [7, 0], [19, 35], 8, 2, 64, dtype, fused_qkv=True)
    out, ref = _run_and_ref(*case)
    assert out.dtype == dtype and rel_err(out, ref) < attn_tol(dtype, device)


def test_extend_fp8_prefix(device, gen):
    case = _case(device, gen, [21, 40], [5, 18], 4, 2, 64, torch.bfloat16, kv_dtype=torch.float8_e4m3fn)
    out, ref = _run_and_ref(*case)
    assert rel_err(out, ref) < attn_tol(torch.bfloat16, device)


def test_extend_first_token_sees_only_prefix_and_itself(device, gen):
    # a structural check independent of the oracle: with V = one-hot per key position, the output
    # weights must vanish on every key after the query's own position
    prefix, extend = [3], [4]
    q, k, v, k_buf, v_buf, table, lens = _case(device, gen, prefix, extend, 2, 1, 64, torch.float32)
    v.zero_()
    v_buf.zero_()
    row = lens["idx"][0].item()
    for pos in range(3):
        v_buf[table[row, pos].long(), 0, pos] = 1.0
    for i in range(4):
        v[i, 0, 3 + i] = 1.0
    out, _ = _run_and_ref(q, k, v, k_buf, v_buf, table, lens)
    for i in range(4):
        weights = out[i, :, :7]
        assert torch.all(weights[:, 3 + i + 1 :] == 0)
        assert torch.allclose(weights.sum(-1), torch.ones(2, device=device), atol=1e-5)


def test_plan_extend_tiles_covers_every_query_once_longest_first():
    extend, prefix = [1, 40, 17, 0, 16], [100, 0, 5, 9, 3]
    tiles = plan_extend_tiles(extend, prefix, 16, "cpu").table.tolist()
    covered = sorted((b, m + i) for b, m in tiles for i in range(16) if m + i < extend[b])
    assert covered == sorted((b, i) for b in range(len(extend)) for i in range(extend[b]))
    keys = [prefix[b] + min(m + 16, extend[b]) for b, m in tiles]
    assert keys == sorted(keys, reverse=True)


def test_extend_rejects_mismatched_plan(device, gen):
    q, k, v, k_buf, v_buf, table, lens = _case(device, gen, [2], [3], 4, 2, 64, torch.float32)
    tiles = plan_extend_tiles([3], [2], BLOCK_M * 2, device)
    with pytest.raises(ValueError, match="block_m"):
        extend_attention(q, k, v, torch.empty_like(q), k_buf, v_buf, table, lens["idx"], lens["prefix"],
                         lens["extend"], lens["starts"], tiles, 0.25)
    with pytest.raises(ValueError, match="head counts"):
        extend_attention(q, k[:, :1], v[:, :1], torch.empty_like(q), k_buf, v_buf, table, lens["idx"],
                         lens["prefix"], lens["extend"], lens["starts"], tiles, 0.25)


@pytest.mark.parametrize("logit_cap,window", [(2.0, -1), (0.0, 0), (0.0, 7), (1.5, 20), (0.0, 40)])
def test_extend_soft_cap_and_sliding_window(device, gen, logit_cap, window):
    # windows inside one block, across the prefix/new boundary, and wider than some requests
    q, k, v, k_buf, v_buf, table, lens = _case(device, gen, *MIXED, 8, 2, 64, torch.float32)
    q = q * 4  # scores large enough for the cap to bind
    tiles = plan_extend_tiles(lens["extend"].tolist(), lens["prefix"].tolist(), BLOCK_M, q.device)
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    args = (k_buf, v_buf, table, lens["idx"], lens["prefix"], lens["extend"])
    extend_attention(q, k, v, out, *args, lens["starts"], tiles, 0.25, logit_cap=logit_cap, window=window)
    ref = R.extend_attention_ref(q, k, v, *args, 0.25, logit_cap, window)
    assert rel_err(out, ref) < attn_tol(torch.float32, device)
    assert rel_err(ref, R.extend_attention_ref(q, k, v, *args, 0.25)) > 1e-2  # the variant matters
