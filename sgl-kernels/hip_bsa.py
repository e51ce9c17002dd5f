"""HiP block-sparse attention (BSA): every query block attends to sink + selected blocks + sliding window.

The contract is `hip_reference.hip_bsa_ref`; this module computes the same thing with Triton.

Keys of a query block (positions p_min .. p_max = p_min + q_len - 1) form one *virtual key list* of
three segments, walked BLOCK_N at a time with an online softmax (base 2, log2(e) folded into q):
  sink      token indices 0 .. n_sink-1, n_sink = clamp(min(sink, p_max - window + 1), 0);
  selected  the first ks blocks of `starts` (block_k tokens each, j-th key of the segment =
            starts[j // block_k] + j % block_k); padding entries past ks are never read;
  window    token indices max(0, p_min - window + 1) .. p_max.
A tile may straddle segments: each key gets its token index, whether it is "far" (sink/selected,
visible to query p when idx <= p - window) or "near" (window, visible when p - window < idx <= p),
and, with `extend`, its RoPE position (compacted positions for far keys, the real one shifted by the
block's base for window keys), exactly as the reference assigns them. Keys are gathered through the
paged table (slot = block_table[row, idx], page size 1) from pools of any float dtype (fp8 included),
converted to float32 in registers, rotated when `extend`, then cast to the dot dtype (q's dtype on
GPUs; float32 under the interpreter, whose tl.dot is wrong on bf16/fp8 operands).

q.k is computed as two dots over the neox halves (q1.k1 + q2.k2), so RoPE needs no in-register
permutation and head dims that are not powers of two (80, 96, ...) are padded per half.

Prefill (`_bsa_prefill_kernel`), grid (NB, KVH * head_blocks): a program owns one query block and
`hpp` query heads of one KV group; its [BLOCK_M, D] query tile stacks (query, head) rows, BLOCK_M =
max(16, bq * hpp), hpp = min(pow2(G), max(1, 64 // bq)), so 64-query blocks run one head per program
(heads of a group and neighbouring blocks run side by side and share keys through L2) and small
blocks stack heads to keep the tile >= 16 rows.

Decode (`_bsa_decode_split_kernel` + `_bsa_decode_reduce_kernel`), used when block_size_q == 1:
flash decoding. Grid (NB, KVH * head_blocks, n_splits): the heads of one KV group are the rows of a
[BLOCK_H >= 16, D] tile, so keys are loaded once per group; a block's virtual key list of L keys is
cut into n_splits ranges of whole BLOCK_N tiles (empty ranges write lse = -inf). n_splits is chosen
on the host from NB * KVH * head_blocks and the static key bound sink + kmax * block_k + window so
that even one request fills the GPU (~4 programs per SM), with at least `min_split_keys` (64) keys per
split; it needs no device sync, so the launch is CUDA-graph safe. The reduce kernel, grid (NB, H),
merges the splits by log-sum-exp.

Shapes: q [Nq, H, D] (float32/16/bf16, pre-scaled); k_buf, v_buf [S, KVH, D]; block_table [R, T_max]
int; blk_row, blk_q_start, blk_q_len, blk_pos, ks [NB] int; starts [NB, kmax] int; cos, sin [P, D/2]
float32 (read only when `extend`). blk_q_len <= block_size_q is assumed (queries past block_size_q
are ignored, as in the reference). Returns [Nq, H, D] in q's dtype; rows of q in no block are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from sgl.kernels.hip_offload import TokenCache, cache_lookup, read_cached
from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, dot_in_fp32, dot_precision, next_pow2

LOG2E = 1.4426950408889634

_Q_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_KV_DTYPES = _Q_DTYPES + (torch.float8_e4m3fn, torch.float8_e5m2)
_INT_DTYPES = (torch.int32, torch.int64)
_MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class BsaConfig:
    """Launch shapes. block_m: target rows (queries x heads) of a prefill tile; block_n: keys per
    step (32 = four 8-token blocks); decode: keys per step, programs per SM wanted, fewest keys
    worth a split, most splits."""

    block_m: int = 64
    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 2
    decode_block_n: int = 64
    decode_warps: int = 4
    decode_stages: int = 2
    programs_per_sm: int = 4
    min_split_keys: int = 64
    max_splits: int = 64


def default_bsa_config(interpreting: bool = False) -> BsaConfig:
    if interpreting:
        # small tiles so tiny test shapes still cross tile and split boundaries
        return BsaConfig(block_m=64, block_n=16, num_warps=1, num_stages=1, decode_block_n=16, decode_warps=1,
                         decode_stages=1, programs_per_sm=2, min_split_keys=16, max_splits=8)
    return BsaConfig()


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a pretend GPU of 4 SMs


def decode_num_splits(num_blocks: int, kv_heads: int, head_blocks: int, max_keys: int, device,
                      config: Optional[BsaConfig] = None) -> int:
    """Splits per (block, KV head group) of the decode kernel: enough programs for
    `programs_per_sm` per SM, no split shorter than `min_split_keys` keys of the longest possible
    list (`max_keys`), at most `max_splits`."""
    cfg = config or default_bsa_config(dot_in_fp32())
    programs = max(1, num_blocks * kv_heads * head_blocks)
    want = triton.cdiv(cfg.programs_per_sm * _sm_count(torch.device(device)), programs)
    cap = triton.cdiv(max(1, max_keys), cfg.min_split_keys)
    return int(max(1, min(want, cap, cfg.max_splits)))


# ------------------------------------------------------------------------------------------------
# shared device helpers


@triton.jit
def _block_geometry(p_min, p_max, ks_raw, kmax, sink, window, BLOCK_K: tl.constexpr):
    """Segment sizes of a block's virtual key list and its RoPE shifts (see the module docstring)."""
    n_sink = tl.maximum(tl.minimum(sink, p_max - window + 1), 0)
    n_sel = tl.minimum(tl.maximum(ks_raw, 0), kmax) * BLOCK_K
    win_lo = tl.maximum(p_min - window + 1, 0)
    n_win = tl.maximum(p_max - win_lo + 1, 0)
    # compacted position of sink token 0; every position of the block is shifted down by `base`
    first = p_min - window - ks_raw * BLOCK_K + 1 - sink
    base = tl.maximum(first, 0)
    return n_sink, n_sel, win_lo, n_win, first - base, base


@triton.jit
def _key_tile(v, n_sink, n_sel, n_all, win_lo, far_first, base, sink, far_last, starts_row, stride_sk,
              BLOCK_K: tl.constexpr):
    """Token index, far flag, validity and RoPE position of the virtual keys `v` [N]."""
    in_sink = v < n_sink
    far = v < n_sink + n_sel
    in_sel = far & (v >= n_sink)
    in_win = (v >= n_sink + n_sel) & (v < n_all)
    j = tl.where(in_sel, v - n_sink, 0)
    blk_start = tl.load(starts_row + (j // BLOCK_K) * stride_sk, mask=in_sel, other=0).to(tl.int32)
    idx = tl.where(in_sink, v, tl.where(in_sel, blk_start + j % BLOCK_K, win_lo + (v - n_sink - n_sel)))
    # far keys past p_max - window are seen by no query of the block: never load them
    key_ok = in_sink | (in_sel & (idx >= sink) & (idx <= far_last)) | in_win
    rank = tl.where(in_sink, v, sink + j)
    pos = tl.maximum(tl.where(far, far_first + rank, idx - base), 0)
    return idx, far, key_ok, pos


@triton.jit
def _rope(x1, x2, Cos, Sin, pos, stride_c, stride_s, offs_h, mask, HALF: tl.constexpr):
    """Neox rotation of the halves x1, x2 [N, BLOCK_DH] (float32) by the table rows `pos` [N]."""
    m = mask[:, None] & (offs_h[None, :] < HALF)
    c = tl.load(Cos + pos[:, None].to(tl.int64) * stride_c + offs_h[None, :], mask=m, other=0.0)
    s = tl.load(Sin + pos[:, None].to(tl.int64) * stride_s + offs_h[None, :], mask=m, other=0.0)
    return x1 * c - x2 * s, x2 * c + x1 * s


@triton.jit
def _load_keys(K, V, BankK, BankV, Page, Touch, bt_row, idx, key_ok, pos, kv_head,
               stride_kt, stride_kh, stride_vt, stride_vh,
               Cos, Sin, stride_c, stride_s, offs_h, offs_d, dot_dtype,
               HALF: tl.constexpr, HEAD_DIM: tl.constexpr, EXTEND: tl.constexpr, OFFLOAD: tl.constexpr):
    """Gather the key halves [N, BLOCK_DH] and values [N, BLOCK_D] of tokens `idx` (rows with
    key_ok False read 0), rotated when EXTEND, in `dot_dtype`. OFFLOAD: K and V are host memory, read
    only for the tokens the cache (BankK/BankV, Page) misses; every read token is marked in Touch
    (sgl.kernels.hip_offload)."""
    slots = tl.load(bt_row + idx.to(tl.int64), mask=key_ok, other=0).to(tl.int64)
    crow = cache_lookup(Page, Touch, slots, key_ok, OFFLOAD)
    hit = (crow >= 0)[:, None]
    crow0 = tl.maximum(crow, 0)[:, None]
    h_mask = key_ok[:, None] & (offs_h[None, :] < HALF)
    k_in = kv_head * stride_kh + offs_h[None, :]
    k_off = slots[:, None] * stride_kt + k_in
    c_off = crow0 * stride_kt + k_in
    k1 = read_cached(K, BankK, k_off, c_off, hit, h_mask, OFFLOAD)
    k2 = read_cached(K, BankK, k_off + HALF, c_off + HALF, hit, h_mask, OFFLOAD)
    if EXTEND:
        k1, k2 = _rope(k1.to(tl.float32), k2.to(tl.float32), Cos, Sin, pos, stride_c, stride_s, offs_h, key_ok,
                       HALF)
    v_in = kv_head * stride_vh + offs_d[None, :]
    v = read_cached(V, BankV, slots[:, None] * stride_vt + v_in, crow0 * stride_vt + v_in, hit,
                    key_ok[:, None] & (offs_d[None, :] < HEAD_DIM), OFFLOAD)
    return k1.to(dot_dtype), k2.to(dot_dtype), v.to(dot_dtype)


@triton.jit
def _softmax_step(q1, q2, k1, k2, v, visible, acc, m_i, l_i, DOT_PRECISION: tl.constexpr):
    """Fold one key tile into (acc, m_i, l_i); scores are already in log2 units."""
    qk = tl.dot(q1, tl.trans(k1), input_precision=DOT_PRECISION)
    qk = tl.dot(q2, tl.trans(k2), qk, input_precision=DOT_PRECISION)
    qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))  # m_i starts finite: fully masked rows stay at p = 0
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _load_queries(Q, tok, heads, row_ok, qpos, base, stride_qt, stride_qh, Cos, Sin, stride_c, stride_s, offs_h,
                  dot_dtype, HALF: tl.constexpr, EXTEND: tl.constexpr):
    """Query halves [M, BLOCK_DH]: rotated at (qpos - base) when EXTEND, times log2(e), in dot_dtype."""
    m = row_ok[:, None] & (offs_h[None, :] < HALF)
    qp = Q + tok[:, None].to(tl.int64) * stride_qt + heads[:, None].to(tl.int64) * stride_qh + offs_h[None, :]
    q1 = tl.load(qp, mask=m, other=0.0).to(tl.float32)
    q2 = tl.load(qp + HALF, mask=m, other=0.0).to(tl.float32)
    if EXTEND:
        q1, q2 = _rope(q1, q2, Cos, Sin, tl.maximum(qpos - base, 0), stride_c, stride_s, offs_h, row_ok, HALF)
    log2e = 1.4426950408889634  # LOG2E (a jit function may not read module globals)
    return (q1 * log2e).to(dot_dtype), (q2 * log2e).to(dot_dtype)


# ------------------------------------------------------------------------------------------------
# prefill


@triton.jit
def _bsa_prefill_kernel(
    Q, K, V, Out, BlockTable, BlkRow, BlkQStart, BlkQLen, BlkPos, Starts, Ks, Cos, Sin,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_bt, stride_sb, stride_sk, stride_c, stride_s,
    kv_group, head_blocks, kmax, sink, window,
    BQ: tl.constexpr, HPP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_D: tl.constexpr, EXTEND: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    HALF: tl.constexpr = HEAD_DIM // 2
    b = tl.program_id(0)
    kv_head = tl.program_id(1) // head_blocks
    first_local = (tl.program_id(1) % head_blocks) * HPP
    q_len = tl.minimum(tl.load(BlkQLen + b).to(tl.int32), BQ)
    if q_len <= 0:
        return
    q_start = tl.load(BlkQStart + b).to(tl.int64)
    p_min = tl.load(BlkPos + b).to(tl.int32)
    p_max = p_min + q_len - 1
    ks_raw = tl.load(Ks + b).to(tl.int32)
    n_sink, n_sel, win_lo, n_win, far_first, base = _block_geometry(p_min, p_max, ks_raw, kmax, sink, window,
                                                                    BLOCK_K)
    n_all = n_sink + n_sel + n_win
    far_last = p_max - window

    # rows of the tile: (query qi, local head hl), heads fastest
    offs_m = tl.arange(0, BLOCK_M)
    qi = offs_m // HPP
    hl = first_local + offs_m % HPP
    row_ok = (offs_m < BQ * HPP) & (qi < q_len) & (hl < kv_group)
    heads = kv_head * kv_group + hl
    qpos = p_min + qi
    offs_h = tl.arange(0, BLOCK_DH)
    offs_d = tl.arange(0, BLOCK_D)
    if DOT_F32:
        dot_dtype = tl.float32
    else:
        dot_dtype = Out.dtype.element_ty
    q1, q2 = _load_queries(Q, q_start + qi, heads, row_ok, qpos, base, stride_qt, stride_qh, Cos, Sin,
                           stride_c, stride_s, offs_h, dot_dtype, HALF, EXTEND)

    bt_row = BlockTable + tl.load(BlkRow + b).to(tl.int64) * stride_bt
    starts_row = Starts + b.to(tl.int64) * stride_sb
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for v0 in range(0, n_all, BLOCK_N):
        vk = v0 + tl.arange(0, BLOCK_N)
        idx, far, key_ok, pos = _key_tile(vk, n_sink, n_sel, n_all, win_lo, far_first, base, sink, far_last,
                                          starts_row, stride_sk, BLOCK_K)
        k1, k2, v = _load_keys(K, V, K, V, BlockTable, BlockTable, bt_row, idx, key_ok, pos, kv_head,
                               stride_kt, stride_kh, stride_vt, stride_vh, Cos, Sin, stride_c, stride_s, offs_h, offs_d,
                               dot_dtype, HALF, HEAD_DIM, EXTEND, False)
        kk = idx[None, :]
        qp = qpos[:, None]
        visible = tl.where(far[None, :], kk <= qp - window, (kk > qp - window) & (kk <= qp))
        visible = visible & key_ok[None, :] & row_ok[:, None]
        acc, m_i, l_i = _softmax_step(q1, q2, k1, k2, v, visible, acc, m_i, l_i, DOT_PRECISION)

    # a query that sees no key gets 0 (the reference's nan_to_num)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    op = Out + (q_start + qi)[:, None] * stride_ot + heads[:, None].to(tl.int64) * stride_oh + offs_d[None, :]
    tl.store(op, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


# ------------------------------------------------------------------------------------------------
# decode (one query per block): split-K over the virtual key list, then a log-sum-exp merge


@triton.jit
def _bsa_decode_split_kernel(
    Q, K, V, BankK, BankV, Page, Touch, BlockTable, BlkRow, BlkQStart, BlkQLen, BlkPos, Starts, Ks, Cos, Sin, MidO, MidLse,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_bt, stride_sb, stride_sk, stride_c, stride_s,
    stride_mob, stride_moh, stride_mos, stride_mlb, stride_mlh,
    kv_group, head_blocks, n_splits, kmax, sink, window,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_D: tl.constexpr, EXTEND: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr, OFFLOAD: tl.constexpr,
):
    HALF: tl.constexpr = HEAD_DIM // 2
    b = tl.program_id(0)
    kv_head = tl.program_id(1) // head_blocks
    first_local = (tl.program_id(1) % head_blocks) * BLOCK_H
    split = tl.program_id(2)
    if tl.load(BlkQLen + b) <= 0:
        return
    q_tok = tl.load(BlkQStart + b).to(tl.int64)
    p = tl.load(BlkPos + b).to(tl.int32)
    ks_raw = tl.load(Ks + b).to(tl.int32)
    n_sink, n_sel, win_lo, n_win, far_first, base = _block_geometry(p, p, ks_raw, kmax, sink, window, BLOCK_K)
    n_all = n_sink + n_sel + n_win
    far_last = p - window
    per_split = tl.cdiv(tl.cdiv(n_all, n_splits), BLOCK_N) * BLOCK_N
    v_lo = split * per_split
    v_hi = tl.minimum(v_lo + per_split, n_all)

    offs_m = tl.arange(0, BLOCK_H)
    hl = first_local + offs_m
    row_ok = hl < kv_group
    heads = kv_head * kv_group + hl
    offs_h = tl.arange(0, BLOCK_DH)
    offs_d = tl.arange(0, BLOCK_D)
    if DOT_F32:
        dot_dtype = tl.float32
    else:
        dot_dtype = Q.dtype.element_ty
    q1, q2 = _load_queries(Q, q_tok + offs_m * 0, heads, row_ok, p + offs_m * 0, base, stride_qt, stride_qh,
                           Cos, Sin, stride_c, stride_s, offs_h, dot_dtype, HALF, EXTEND)

    bt_row = BlockTable + tl.load(BlkRow + b).to(tl.int64) * stride_bt
    starts_row = Starts + b.to(tl.int64) * stride_sb
    m_i = tl.full([BLOCK_H], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for v0 in range(v_lo, v_hi, BLOCK_N):
        vk = v0 + tl.arange(0, BLOCK_N)
        # tiles never cross v_lo + per_split (both multiples of BLOCK_N): no key of the next split leaks in
        idx, far, key_ok, pos = _key_tile(vk, n_sink, n_sel, v_hi, win_lo, far_first, base, sink, far_last,
                                          starts_row, stride_sk, BLOCK_K)
        k1, k2, v = _load_keys(K, V, BankK, BankV, Page, Touch, bt_row, idx, key_ok, pos, kv_head,
                               stride_kt, stride_kh, stride_vt, stride_vh, Cos, Sin, stride_c, stride_s, offs_h, offs_d,
                               dot_dtype, HALF, HEAD_DIM, EXTEND, OFFLOAD)
        # one query: every listed key is visible (far keys were checked against p - window above)
        visible = key_ok[None, :] & row_ok[:, None]
        acc, m_i, l_i = _softmax_step(q1, q2, k1, k2, v, visible, acc, m_i, l_i, DOT_PRECISION)

    has_keys = l_i > 0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    mo = MidO + b.to(tl.int64) * stride_mob + heads[:, None] * stride_moh + split * stride_mos + offs_d[None, :]
    tl.store(mo, out, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))
    tl.store(MidLse + b.to(tl.int64) * stride_mlb + heads * stride_mlh + split, lse, mask=row_ok)


@triton.jit
def _bsa_decode_reduce_kernel(
    MidO, MidLse, BlkQStart, BlkQLen, Out,
    stride_mob, stride_moh, stride_mos, stride_mlb, stride_mlh, stride_ot, stride_oh, n_splits,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    if tl.load(BlkQLen + b) <= 0:
        return
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < n_splits
    lse = tl.load(MidLse + b.to(tl.int64) * stride_mlb + h * stride_mlh + offs_s, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)  # no key at all: output 0, not NaN
    keep = s_mask & (lse > float("-inf"))
    w = tl.where(keep, tl.exp2(lse - lse_max), 0.0)
    parts = tl.load(MidO + b.to(tl.int64) * stride_mob + h * stride_moh + offs_s[:, None] * stride_mos
                    + offs_d[None, :], mask=keep[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    q_tok = tl.load(BlkQStart + b).to(tl.int64)
    tl.store(Out + q_tok * stride_ot + h * stride_oh + offs_d, out.to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)


# ------------------------------------------------------------------------------------------------
# host side

def _check_args(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                block_k, sink, window, extend, cos, sin, block_size_q) -> None:
    for name, t in (("q", q), ("k_buf", k_buf), ("v_buf", v_buf), ("block_table", block_table), ("starts", starts),
                    ("blk_row", blk_row), ("blk_q_start", blk_q_start), ("blk_q_len", blk_q_len),
                    ("blk_pos", blk_pos), ("ks", ks)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
    if q.dim() != 3 or k_buf.dim() != 3 or v_buf.dim() != 3:
        raise ValueError(f"q, k_buf, v_buf must be 3-D, got {q.dim()}, {k_buf.dim()}, {v_buf.dim()}")
    if q.dtype not in _Q_DTYPES:
        raise ValueError(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    for name, t in (("k_buf", k_buf), ("v_buf", v_buf)):
        if t.dtype not in _KV_DTYPES:
            raise ValueError(f"{name} must be float32/float16/bfloat16/float8_e4m3fn/float8_e5m2, got {t.dtype}")
    if k_buf.shape != v_buf.shape:
        raise ValueError(f"k_buf {tuple(k_buf.shape)} and v_buf {tuple(v_buf.shape)} must have one shape")
    heads, dim = q.shape[1], q.shape[2]
    if k_buf.shape[1] == 0 or heads % k_buf.shape[1]:
        raise ValueError(f"query heads {heads} must be a multiple of KV heads {k_buf.shape[1]}")
    if k_buf.shape[2] != dim:
        raise ValueError(f"head dim mismatch: q {tuple(q.shape)}, k_buf {tuple(k_buf.shape)}")
    if dim % 2 or dim < 2 or dim > _MAX_HEAD_DIM:
        raise ValueError(f"head dim must be even and at most {_MAX_HEAD_DIM}, got {dim}")
    if block_table.dim() != 2 or block_table.dtype not in _INT_DTYPES:
        raise ValueError(f"block_table must be a 2-D int32/int64 tensor, got {block_table.dim()}-D {block_table.dtype}")
    nb = blk_row.shape[0] if blk_row.dim() == 1 else -1
    for name, t in (("blk_row", blk_row), ("blk_q_start", blk_q_start), ("blk_q_len", blk_q_len),
                    ("blk_pos", blk_pos), ("ks", ks)):
        if t.dim() != 1 or t.shape[0] != nb or t.dtype not in _INT_DTYPES:
            raise ValueError(f"{name} must be a 1-D int32/int64 tensor of {max(nb, 0)} blocks, "
                             f"got shape {tuple(t.shape)} {t.dtype}")
    if starts.dim() != 2 or starts.shape[0] != nb or starts.dtype not in _INT_DTYPES:
        raise ValueError(f"starts must be a [num_blocks={nb}, kmax] int32/int64 tensor, got {tuple(starts.shape)} "
                         f"{starts.dtype}")
    if int(block_size_q) < 1 or int(block_size_q) & (int(block_size_q) - 1):
        raise ValueError(f"block_size_q must be a power of two, got {block_size_q}")
    if int(block_k) < 1:
        raise ValueError(f"block_k must be >= 1, got {block_k}")
    if int(sink) < 0 or int(window) < 0:
        raise ValueError(f"sink and window must be >= 0, got sink={sink}, window={window}")
    tensors = dict(q=q, k_buf=k_buf, v_buf=v_buf, block_table=block_table, blk_row=blk_row, blk_q_start=blk_q_start,
                   blk_q_len=blk_q_len, blk_pos=blk_pos, starts=starts, ks=ks)
    if extend:
        for name, t in (("cos", cos), ("sin", sin)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} must be a tensor when extend=True, got {type(t).__name__}")
            if t.dim() != 2 or t.shape[1] != dim // 2 or t.dtype != torch.float32:
                raise ValueError(f"{name} must be a float32 [P, D/2={dim // 2}] table, got {tuple(t.shape)} {t.dtype}")
            check_last_dim_contiguous(name, t)
        tensors.update(cos=cos, sin=sin)
    for name in ("q", "k_buf", "v_buf", "block_table"):
        check_last_dim_contiguous(name, tensors[name])
    check_same_device(**tensors)


def _common(q, k_buf, starts, cos, sin, extend):
    if not extend or cos is None:
        cos = sin = q.new_zeros(1, 1, dtype=torch.float32)  # never read
    dim = q.shape[2]
    return dict(
        kv_group=q.shape[1] // k_buf.shape[1], kmax=starts.shape[1], cos=cos, sin=sin,
        HEAD_DIM=dim, BLOCK_DH=max(16, next_pow2(dim // 2)), BLOCK_D=max(16, next_pow2(dim)),
        DOT_F32=dot_in_fp32(), DOT_PRECISION=dot_precision(q.dtype),
    )


def hip_bsa_prefill(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                    block_k, sink, window, extend, cos, sin, block_size_q, config: Optional[BsaConfig] = None,
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The prefill kernel for any block_size_q (decode blocks included). Arguments are not checked
    here: call `hip_bsa`, or `_check_args` first. `out` (zeros where no block writes) is filled."""
    cfg = config or default_bsa_config(dot_in_fp32())
    c = _common(q, k_buf, starts, cos, sin, extend)
    if out is None:
        out = torch.zeros_like(q)
    nb = blk_row.shape[0]
    if nb == 0 or q.shape[0] == 0:
        return out
    bq, group = int(block_size_q), c["kv_group"]
    hpp = min(next_pow2(group), max(1, cfg.block_m // bq))
    head_blocks = triton.cdiv(group, hpp)
    block_m = max(16, bq * hpp)
    block_n = max(16, cfg.block_n)
    _bsa_prefill_kernel[(nb, k_buf.shape[1] * head_blocks)](
        q, k_buf, v_buf, out, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks, c["cos"], c["sin"],
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), v_buf.stride(0), v_buf.stride(1),
        out.stride(0), out.stride(1), block_table.stride(0), starts.stride(0), starts.stride(1),
        c["cos"].stride(0), c["sin"].stride(0),
        group, head_blocks, c["kmax"], int(sink), int(window),
        BQ=bq, HPP=hpp, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=int(block_k),
        HEAD_DIM=c["HEAD_DIM"], BLOCK_DH=c["BLOCK_DH"], BLOCK_D=c["BLOCK_D"], EXTEND=bool(extend),
        DOT_F32=c["DOT_F32"], DOT_PRECISION=c["DOT_PRECISION"],
        num_warps=cfg.num_warps * (2 if block_m >= 128 else 1), num_stages=cfg.num_stages,
    )
    return out


def hip_bsa_decode(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                   block_k, sink, window, extend, cos, sin, num_splits: Optional[int] = None,
                   config: Optional[BsaConfig] = None, out: Optional[torch.Tensor] = None,
                   cache: Optional[TokenCache] = None) -> torch.Tensor:
    """Split-K decode (every block holds at most one query). `num_splits` None: `decode_num_splits`.
    `cache`: k_buf / v_buf are an offloaded (host) pool read through this GPU cache
    (sgl.kernels.hip_offload). Arguments are not checked here (see `hip_bsa_prefill`)."""
    cfg = config or default_bsa_config(dot_in_fp32())
    c = _common(q, k_buf, starts, cos, sin, extend)
    if out is None:
        out = torch.zeros_like(q)
    nb, heads, dim = blk_row.shape[0], q.shape[1], q.shape[2]
    if nb == 0 or q.shape[0] == 0:
        return out
    group, kv_heads = c["kv_group"], k_buf.shape[1]
    block_h = max(16, min(next_pow2(group), 64))
    head_blocks = triton.cdiv(group, block_h)
    if num_splits is None:
        max_keys = int(sink) + c["kmax"] * int(block_k) + int(window)
        num_splits = decode_num_splits(nb, kv_heads, head_blocks, max_keys, q.device, cfg)
    num_splits = int(num_splits)
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if cache is not None:
        cache.check(k_buf, v_buf)
        bank_k, bank_v, page, touch = cache.bank_k, cache.bank_v, cache.page, cache.touch
    else:
        bank_k, bank_v, page, touch = k_buf, v_buf, block_table, block_table  # never read
    mid_o = torch.empty(nb, heads, num_splits, dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(nb, heads, num_splits, dtype=torch.float32, device=q.device)
    _bsa_decode_split_kernel[(nb, kv_heads * head_blocks, num_splits)](
        q, k_buf, v_buf, bank_k, bank_v, page, touch, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks, c["cos"], c["sin"],
        mid_o, mid_lse,
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), v_buf.stride(0), v_buf.stride(1),
        block_table.stride(0), starts.stride(0), starts.stride(1), c["cos"].stride(0), c["sin"].stride(0),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        group, head_blocks, num_splits, c["kmax"], int(sink), int(window),
        BLOCK_H=block_h, BLOCK_N=max(16, cfg.decode_block_n), BLOCK_K=int(block_k),
        HEAD_DIM=c["HEAD_DIM"], BLOCK_DH=c["BLOCK_DH"], BLOCK_D=c["BLOCK_D"], EXTEND=bool(extend),
        DOT_F32=c["DOT_F32"], DOT_PRECISION=c["DOT_PRECISION"], OFFLOAD=cache is not None,
        num_warps=cfg.decode_warps, num_stages=cfg.decode_stages,
    )
    _bsa_decode_reduce_kernel[(nb, heads)](
        mid_o, mid_lse, blk_q_start, blk_q_len, out,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1), num_splits,
        HEAD_DIM=dim, BLOCK_S=max(2, next_pow2(num_splits)), BLOCK_D=c["BLOCK_D"],
        num_warps=4 if dim * num_splits >= 1024 else 2,
    )
    return out


def hip_bsa(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
            block_k, sink, window, extend, cos, sin, block_size_q, *, num_splits: Optional[int] = None,
            config: Optional[BsaConfig] = None, cache: Optional[TokenCache] = None) -> torch.Tensor:
    """Block-sparse attention of every query block over sink + selected blocks + sliding window;
    the semantics of `hip_reference.hip_bsa_ref` (see the module docstrings). block_size_q == 1
    takes the split-K decode kernels (`num_splits` overrides their split count), anything else the
    prefill kernel. Returns [Nq, H, D] in q's dtype (rows of q in no block are 0)."""
    _check_args(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                block_k, sink, window, extend, cos, sin, block_size_q)
    if int(block_size_q) == 1:
        return hip_bsa_decode(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                              block_k, sink, window, extend, cos, sin, num_splits=num_splits, config=config,
                              cache=cache)
    if cache is not None:
        raise ValueError("hip_bsa: a cache is read by the decode kernel only (block_size_q == 1)")
    return hip_bsa_prefill(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                           block_k, sink, window, extend, cos, sin, block_size_q, config=config)
