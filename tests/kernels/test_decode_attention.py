"""Split-K decode attention vs the float64 oracle, on scattered KV slots and mixed lengths."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import attn_tol, rel_err
from sgl.kernels import reference as R
from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention


def _case(device, gen, lens, heads, kv_heads, head_dim, dtype, kv_dtype=None, slots=300):
    kv_dtype = kv_dtype or dtype
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 3, max_ctx=max(lens) + 5, num_slots=slots, generator=gen)
    k_buf = torch.randn(slots + 1, kv_heads, head_dim, generator=gen).to(kv_dtype).to(device)
    v_buf = torch.randn(slots + 1, kv_heads, head_dim, generator=gen).to(kv_dtype).to(device)
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(dtype).to(device)
    idx = torch.tensor(rows, device=device)
    seq = torch.tensor(lens, device=device)
    return q, k_buf, v_buf, table.to(device), idx, seq


def _run(q, k_buf, v_buf, table, idx, seq, max_splits, scale=0.3):
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)  # poison: every row must be written
    mid_o, mid_lse = alloc_decode_scratch(q.shape[0], q.shape[1], v_buf.shape[2], max_splits, q.device)
    mid_o.fill_(float("nan"))
    decode_attention(q, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, scale, max_splits)
    return out


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 4, 64), (8, 2, 128), (6, 2, 80)])
@pytest.mark.parametrize("max_splits", [1, 3, 64])
def test_decode_matches_oracle(device, gen, heads, kv_heads, head_dim, max_splits):
    # 64 splits is more than any request has keys: trailing splits must be empty, not wrong
    lens = [1, 37, 2, 70, 16]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, lens, heads, kv_heads, head_dim, torch.float32)
    out = _run(q, k_buf, v_buf, table, idx, seq, max_splits)
    ref = R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3)
    assert rel_err(out, ref) < attn_tol(torch.float32, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_16bit(device, gen, dtype):
    lens = [45, 3, 90]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, lens, 8, 2, 64, dtype)
    out = _run(q, k_buf, v_buf, table, idx, seq, max_splits=4)
    assert out.dtype == dtype
    assert rel_err(out, R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3)) < attn_tol(dtype, device)


@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_decode_fp8_pool(device, gen, kv_dtype):
    lens = [33, 7]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, lens, 4, 1, 64, torch.bfloat16, kv_dtype=kv_dtype)
    out = _run(q, k_buf, v_buf, table, idx, seq, max_splits=8)
    # the oracle reads the same fp8 values, so only the kernel's own rounding remains
    assert rel_err(out, R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3)) < attn_tol(torch.bfloat16, device)


def test_decode_softmax_is_shift_invariant_in_scale(device, gen):
    # large logits (scale 4, |qk| ~ 50) overflow a naive exp; the online max must absorb them
    lens = [50, 9]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, lens, 4, 2, 64, torch.float32)
    out = _run(q, k_buf, v_buf, table, idx, seq, max_splits=4, scale=4.0)
    assert rel_err(out, R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 4.0)) < attn_tol(torch.float32, device)


def test_decode_zero_length_request_gives_zeros(device, gen):
    lens = [0, 12]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, [1, 12], 4, 2, 64, torch.float32)
    seq = torch.tensor(lens, device=device)
    out = _run(q, k_buf, v_buf, table, idx, seq, max_splits=4)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert rel_err(out[1:], R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3)[1:]) < attn_tol(torch.float32, device)


def test_decode_rejects_bad_arguments(device, gen):
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, [5], 4, 2, 64, torch.float32)
    out = torch.empty_like(q)
    mid_o, mid_lse = alloc_decode_scratch(1, 4, 64, 2, device)
    with pytest.raises(ValueError, match="max_splits"):
        decode_attention(q, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, 0.3, 0)
    with pytest.raises(ValueError, match="scratch"):
        decode_attention(q, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, 0.3, 4)
    with pytest.raises(ValueError, match="int32"):
        decode_attention(q, k_buf, v_buf, out, table.long(), idx, seq, mid_o, mid_lse, 0.3, 2)
    with pytest.raises(ValueError, match="multiple"):
        decode_attention(q[:, :3], k_buf, v_buf, out[:, :3], table, idx, seq, mid_o, mid_lse, 0.3, 2)


def test_split_count_fills_the_gpu_for_small_batches():
    from sgl.kernels.decode_attention import decode_kv_splits

    assert decode_kv_splits(1, 8, 132) == 64  # one long request: 512 programs on 132 SMs
    assert decode_kv_splits(4, 8, 132) == 17
    assert decode_kv_splits(64, 8, 132) == 8  # large batches keep the flag's value
    assert decode_kv_splits(1, 8, 0) == 8  # no GPU: the flag's value
    assert decode_kv_splits(1, 1, 132, floor=3, most=16) == 16


@pytest.mark.parametrize("logit_cap,window", [(2.0, -1), (0.0, 0), (0.0, 20), (1.5, 40)])
def test_decode_soft_cap_and_sliding_window(device, gen, logit_cap, window):
    # windows shorter than some requests, past a split's start, and 0 (the query's own key only)
    lens = [1, 37, 2, 70, 16]
    q, k_buf, v_buf, table, idx, seq = _case(device, gen, lens, 8, 2, 64, torch.float32)
    q = q * 4  # scores large enough for the cap to bind
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    mid_o, mid_lse = alloc_decode_scratch(q.shape[0], q.shape[1], v_buf.shape[2], 4, q.device)
    decode_attention(q, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, 0.3, 4, logit_cap=logit_cap, window=window)
    ref = R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3, logit_cap, window)
    assert rel_err(out, ref) < attn_tol(torch.float32, device)
    assert rel_err(ref, R.decode_attention_ref(q, k_buf, v_buf, table, idx, seq, 0.3)) > 1e-2  # the variant matters
