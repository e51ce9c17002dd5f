"""Decode attention over the token-level KV pool: split-K flash decoding with grouped query heads.

Every request has one query token. Its keys are the KV slots req_to_token[row, :seq_len] of the
pool, scattered anywhere in it (page size 1), so each key row is gathered through req_to_token.

Algorithm (two launches):
  1. `_decode_split_kernel`, grid (B, KVH * head_blocks, max_splits). Request b's keys are cut into
     n_b = clamp(ceil(seq_len_b / min_split_len), 1, max_splits) splits of whole BLOCK_N blocks; the
     program for (b, kv head, split s < n_b) walks its split BLOCK_N keys at a time with an online
     softmax and writes the split's normalised output and log2-sum-exp. The query heads that share
     a KV head (GQA) sit in one program as the rows of a [BLOCK_H, D] tile, so every key is read
     from memory once per request, not once per query head; BLOCK_H is padded to 16 because
     tensor-core dots need 16 rows.
  2. `_decode_reduce_kernel`, grid (B, H): merges the n_b partial results, weighting each split by
     2^(lse_s - max lse).
  The split count depends on seq_len, which only the device knows: both kernels compute it from
  seq_lens, so nothing is planned on the host and the launch shapes depend only on B (CUDA-graph
  safe). Splits past n_b exit at once.
Variants (compiled in only when used): `logit_cap` > 0 soft-caps the scaled scores,
s -> cap * tanh(s / cap), before the softmax; `window` >= 0 keeps only the keys at positions
>= seq_len - 1 - window (a sliding window): blocks wholly before it are skipped, so a split left
without keys is empty (weight 0 in the reduce).

Shapes: q [B, H, D]; k_buf, v_buf [S, KVH, D] (any float dtype, fp8 included: converted to q's
dtype on load); req_to_token [rows, max_ctx] int32; req_pool_indices, seq_lens [B] int;
out [B, H, D] (q's dtype); scratch mid_o [B, H, max_splits, Dv] and mid_lse [B, H, max_splits],
float32 (`alloc_decode_scratch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, dot_in_fp32, dot_precision, next_pow2

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class DecodeConfig:
    """Launch shape of the split kernel. `min_split_len`: fewest keys worth a split of their own."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    min_split_len: int = 128


def default_decode_config(interpreting: bool = False) -> DecodeConfig:
    # Hopper: 64 keys x 128 dims x 2 B = 16 KB per K (and V) tile; two stages keep one tile in
    # flight while the previous one is used, which is what a bandwidth-bound loop needs.
    if interpreting:
        return DecodeConfig(block_n=16, num_warps=1, num_stages=1, min_split_len=16)
    return DecodeConfig()


@triton.jit
def soft_cap(x, cap):
    """cap * tanh(x / cap), through the sigmoid (tanh(y) = 2 sigmoid(2y) - 1: no libdevice call, and it
    runs under the interpreter)."""
    return cap * (2.0 * tl.sigmoid(2.0 * x / cap) - 1.0)


@triton.jit
def _num_splits(seq_len, max_splits, MIN_SPLIT: tl.constexpr):
    """Splits used by a request of `seq_len` keys (both kernels must agree)."""
    return tl.minimum(tl.maximum(tl.cdiv(seq_len, MIN_SPLIT), 1), max_splits)


@triton.jit
def _decode_split_kernel(
    Q, K, V, ReqToToken, ReqPoolIdx, SeqLens, MidO, MidLse,
    stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_r2t,
    stride_mob, stride_moh, stride_mos, stride_mlb, stride_mlh,
    qk_scale, kv_group, head_blocks, max_splits, head_dim, v_head_dim, logit_cap, window,
    MIN_SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
    HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1) // head_blocks
    first_head = kv_head * kv_group + (tl.program_id(1) % head_blocks) * BLOCK_H
    split = tl.program_id(2)
    seq_len = tl.load(SeqLens + b).to(tl.int32)
    n_splits = _num_splits(seq_len, max_splits, MIN_SPLIT)
    if split >= n_splits:
        return
    # splits of whole BLOCK_N blocks: no block straddles two splits, only the request's last is partial
    per_split = tl.cdiv(tl.cdiv(seq_len, n_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)
    first_key = 0
    if HAS_WINDOW:
        first_key = tl.maximum(seq_len - 1 - window, 0)
        start = tl.maximum(start, (first_key // BLOCK_N) * BLOCK_N)  # still a block boundary

    offs_h = tl.arange(0, BLOCK_H)
    heads = first_head + offs_h
    h_mask = (tl.program_id(1) % head_blocks) * BLOCK_H + offs_h < kv_group
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_mask = offs_d < head_dim
    dv_mask = offs_dv < v_head_dim
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=h_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    r2t_row = ReqToToken + tl.load(ReqPoolIdx + b).to(tl.int64) * stride_r2t
    m_i = tl.full([BLOCK_H], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_DV], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < end
        # int64: slot * row stride passes 2^31 in a pool of a few million tokens
        slots = tl.load(r2t_row + offs_n, mask=n_mask, other=0).to(tl.int64)
        k = tl.load(K + slots[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0).to(q.dtype)
        # fp32 even when a caller (TorchInductor) passes the scale as a float64 scalar
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * tl.cast(qk_scale, tl.float32)
        if HAS_CAP:  # in log2 units: the launcher passes cap * log2(e)
            qk = soft_cap(qk, logit_cap)
        visible = n_mask
        if HAS_WINDOW:
            visible = visible & (offs_n >= first_key)
        qk = tl.where(visible[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + slots[:, None] * stride_vt + kv_head * stride_vh + offs_dv[None, :],
                    mask=n_mask[:, None] & dv_mask[None, :], other=0.0).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    # an empty split (start >= end) leaves l_i = 0: output 0 with lse = -inf, weight 0 in the reduce
    has_keys = l_i > 0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    mo = MidO + b * stride_mob + heads[:, None] * stride_moh + split * stride_mos + offs_dv[None, :]
    tl.store(mo, out, mask=h_mask[:, None] & dv_mask[None, :])
    tl.store(MidLse + b * stride_mlb + heads * stride_mlh + split, lse, mask=h_mask)


@triton.jit
def _decode_reduce_kernel(
    MidO, MidLse, SeqLens, Out,
    stride_mob, stride_moh, stride_mos, stride_mlb, stride_mlh, stride_ob, stride_oh,
    max_splits, v_head_dim,
    MIN_SPLIT: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    seq_len = tl.load(SeqLens + b).to(tl.int32)
    n_splits = _num_splits(seq_len, max_splits, MIN_SPLIT)
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    s_mask = offs_s < n_splits
    lse = tl.load(MidLse + b * stride_mlb + h * stride_mlh + offs_s, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    # seq_len 0 (never in a real batch) makes every lse -inf; answer 0 rather than NaN
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    w = tl.exp2(lse - lse_max)
    keep = s_mask & (lse > float("-inf"))
    parts = tl.load(MidO + b * stride_mob + h * stride_moh + offs_s[:, None] * stride_mos + offs_dv[None, :],
                    mask=keep[:, None] & (offs_dv[None, :] < v_head_dim), other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(Out + b * stride_ob + h * stride_oh + offs_dv, out.to(Out.dtype.element_ty), mask=offs_dv < v_head_dim)


def decode_kv_splits(batch: int, kv_heads: int, num_sms: int, floor: int = 8, most: int = 64) -> int:
    """Most KV splits for a decode batch: `floor` (--triton-attention-num-kv-splits), raised for small
    batches until batch x KV heads x splits gives every SM about four programs, so one long request
    alone reads its KV at full bandwidth; at most `most`. Each request still uses only the splits
    its length fills (min_split_len keys each)."""
    fill = -(-4 * num_sms // max(1, batch * kv_heads))
    return max(floor, min(most, fill))


def alloc_decode_scratch(batch: int, num_heads: int, v_head_dim: int, max_splits: int,
                         device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mid_o [batch, H, max_splits, Dv], mid_lse [batch, H, max_splits]), float32, uninitialised."""
    mid_o = torch.empty(batch, num_heads, max_splits, v_head_dim, dtype=torch.float32, device=device)
    mid_lse = torch.empty(batch, num_heads, max_splits, dtype=torch.float32, device=device)
    return mid_o, mid_lse


def _check_decode_args(q, k_buf, v_buf, out, req_to_token, mid_o, mid_lse, max_splits) -> None:
    if q.dim() != 3 or k_buf.dim() != 3 or v_buf.dim() != 3:
        raise ValueError(f"q, k_buf, v_buf must be 3-D, got {q.dim()}, {k_buf.dim()}, {v_buf.dim()}")
    if q.shape[1] % k_buf.shape[1]:
        raise ValueError(f"query heads {q.shape[1]} must be a multiple of KV heads {k_buf.shape[1]}")
    if q.shape[2] != k_buf.shape[2] or out.shape != (q.shape[0], q.shape[1], v_buf.shape[2]):
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k_buf {tuple(k_buf.shape)}, out {tuple(out.shape)}")
    if req_to_token.dtype != torch.int32:
        raise ValueError(f"req_to_token must be int32, got {req_to_token.dtype}")
    if mid_o.dtype != torch.float32 or mid_lse.dtype != torch.float32:
        raise ValueError("mid_o and mid_lse must be float32")
    need = (q.shape[0], q.shape[1], max_splits, v_buf.shape[2])
    small = any(have < want for have, want in zip(tuple(mid_o.shape) + tuple(mid_lse.shape), need + need[:3]))
    if mid_o.dim() != 4 or mid_lse.dim() != 3 or small:
        raise ValueError(f"scratch mid_o {tuple(mid_o.shape)} / mid_lse {tuple(mid_lse.shape)} smaller than {need}")
    for name, t in (("q", q), ("k_buf", k_buf), ("v_buf", v_buf), ("out", out), ("req_to_token", req_to_token),
                    ("mid_o", mid_o), ("mid_lse", mid_lse)):
        check_last_dim_contiguous(name, t)
    check_same_device(q=q, k_buf=k_buf, v_buf=v_buf, out=out, req_to_token=req_to_token, mid_o=mid_o)


def decode_attention(q: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, out: torch.Tensor,
                     req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor,
                     mid_o: torch.Tensor, mid_lse: torch.Tensor, sm_scale: float, max_splits: int,
                     config: Optional[DecodeConfig] = None, logit_cap: float = 0.0, window: int = -1) -> torch.Tensor:
    """Write softmax(q k^T * sm_scale) v for every request into `out` (see the module docstring;
    `logit_cap` 0 and `window` -1 are off)."""
    if max_splits < 1:
        raise ValueError(f"max_splits must be >= 1, got {max_splits}")
    if logit_cap < 0 or window < -1:
        raise ValueError(f"logit_cap must be >= 0 and window >= -1, got {logit_cap}, {window}")
    _check_decode_args(q, k_buf, v_buf, out, req_to_token, mid_o, mid_lse, max_splits)
    cfg = config or default_decode_config(dot_in_fp32())
    batch, num_heads, head_dim = q.shape
    kv_group = num_heads // k_buf.shape[1]
    v_head_dim = v_buf.shape[2]
    block_h = max(16, min(next_pow2(kv_group), 64))
    head_blocks = triton.cdiv(kv_group, block_h)
    if batch == 0:
        return out
    _decode_split_kernel[(batch, k_buf.shape[1] * head_blocks, max_splits)](
        q, k_buf, v_buf, req_to_token, req_pool_indices, seq_lens, mid_o, mid_lse,
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), v_buf.stride(0), v_buf.stride(1),
        req_to_token.stride(0), mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        sm_scale * LOG2E, kv_group, head_blocks, max_splits, head_dim, v_head_dim, logit_cap * LOG2E, window,
        MIN_SPLIT=cfg.min_split_len, BLOCK_N=cfg.block_n, BLOCK_H=block_h, BLOCK_D=next_pow2(head_dim),
        BLOCK_DV=next_pow2(v_head_dim), DOT_F32=dot_in_fp32(), DOT_PRECISION=dot_precision(q.dtype),
        HAS_CAP=logit_cap > 0, HAS_WINDOW=window >= 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    _decode_reduce_kernel[(batch, num_heads)](
        mid_o, mid_lse, seq_lens, out,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1), max_splits, v_head_dim,
        MIN_SPLIT=cfg.min_split_len, BLOCK_S=max(2, next_pow2(max_splits)), BLOCK_DV=next_pow2(v_head_dim),
        num_warps=4 if v_head_dim * max_splits >= 1024 else 2,
    )
    return out
