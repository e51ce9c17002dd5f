"""Extend attention: the new tokens of a batch of requests over their cached prefix plus themselves.

Request b has prefix_lens[b] cached tokens (their KV slots req_to_token[row, :prefix], scattered in
the pool) and extend_lens[b] new tokens, laid out back to back in q/k_ext/v_ext from
extend_start_loc[b]. New token i sits at position prefix + i and sees every prefix key and the new
keys 0..i (causal). The new tokens' K/V are read from the contiguous k_ext/v_ext (the pool holds
them too, but gathering through req_to_token would be slower).

Algorithm: flash attention (online softmax in base 2) over query tiles of BLOCK_M tokens of one
request and one query head; grid = num_tiles * H, one program per (tile, head), heads fastest so the
heads of a KV group run side by side and share its K/V through L2. Per program, the key loop runs in
three parts so that only the blocks that need a mask pay for it:
  1. prefix blocks, gathered through req_to_token, unmasked (all before the tail);
  2. the prefix tail block (masked at prefix_len), when the prefix is not a multiple of BLOCK_N;
  3. new keys before the tile's first query, contiguous and unmasked; then the diagonal blocks,
     masked causally.
Variants (compiled in only when used): `logit_cap` > 0 soft-caps the scaled scores,
s -> cap * tanh(s / cap); `window` >= 0 is a sliding window, the query at position p sees keys
p - window .. p: every block is then masked, and the blocks wholly before the tile's first window
are skipped.
The tile table (request, first query) is planned on the host from the host-side lengths, with the
tiles that see the most keys first so the long ones do not start last (`plan_extend_tiles`). A
batch without cached prefixes runs a build of the kernel without parts 1-2 (fewer registers).

Shapes: q [T, H, D]; k_ext, v_ext [T, KVH, D|Dv]; out [T, H, Dv]; k_buf, v_buf [S, KVH, D|Dv] (any
float dtype, fp8 included); req_to_token [rows, max_ctx] int32; req_pool_indices, prefix_lens,
extend_lens, extend_start_loc [B] int; tiles [num_tiles, 2] int32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
import triton
import triton.language as tl

from sgl.kernels.decode_attention import soft_cap
from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, dot_in_fp32, dot_precision, next_pow2

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class ExtendConfig:
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3


def default_extend_config(head_dim: int, interpreting: bool = False) -> ExtendConfig:
    """Hopper tiles: a 128-query tile amortises each K/V block over many rows; the [128, D] fp32
    accumulator plus the [128, BLOCK_N] scores must fit the registers of 8 warps (D <= 128), so
    wider heads take 64-query tiles. (128-key blocks ran ~5% faster on an H200 but spill registers
    with pipelining: tests/kernels/test_hopper_codegen.py; docs/benchmarks.md has the sweep.)"""
    if interpreting:
        return ExtendConfig(block_m=16, block_n=16, num_warps=1, num_stages=1)
    if head_dim <= 64:
        return ExtendConfig(block_m=128, block_n=64, num_warps=4, num_stages=3)
    if head_dim <= 128:
        return ExtendConfig(block_m=128, block_n=64, num_warps=8, num_stages=3)
    return ExtendConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)


class ExtendTiles(NamedTuple):
    table: torch.Tensor  # [num_tiles, 2] int32: (request index in the batch, first query of the tile)
    block_m: int
    has_prefix: bool = True  # False: no request has cached tokens, the prefix loops are compiled out


def plan_extend_tiles(extend_lens: Sequence[int], prefix_lens: Sequence[int], block_m: int,
                      device) -> ExtendTiles:
    """Query tiles of every request, most keys first. Host lists in, one small host-to-device copy."""
    tiles = []
    for b, (ext, pre) in enumerate(zip(extend_lens, prefix_lens)):
        tiles.extend((pre + min(m + block_m, ext), b, m) for m in range(0, ext, block_m))
    tiles.sort(key=lambda t: -t[0])
    table = torch.tensor([[b, m] for _, b, m in tiles], dtype=torch.int32).reshape(-1, 2)
    has_prefix = any(p > 0 for p in prefix_lens)
    if torch.device(device).type == "cuda":
        # pinned + non_blocking: the copy queues behind the GPU's work instead of waiting for it
        return ExtendTiles(table.pin_memory().to(device, non_blocking=True), block_m, has_prefix)
    return ExtendTiles(table.to(device), block_m, has_prefix)


@triton.jit
def _attend_block(q, k, v, acc, m_i, l_i, qk_scale, mask, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  logit_cap, HAS_CAP: tl.constexpr):
    """One online-softmax step: fold keys k [N, D] / values v [N, Dv] into (acc, m_i, l_i)."""
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    scale = tl.cast(qk_scale, tl.float32)  # fp32 under Inductor too
    if HAS_CAP:  # capped in log2 units (the launcher passes cap * log2(e)), before the mask's -inf
        qk = soft_cap(qk * scale, logit_cap) / scale
    if MASKED:
        qk = tl.where(mask, qk, float("-inf"))
    # the scale is applied to the row max and inside the exponent (one FMA per score), not to the scores
    m_new = tl.maximum(m_i, tl.max(qk, 1) * scale)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk * scale - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _load_rows(Base, rows, stride, offs_d, dim, row_mask, dtype, MASKED: tl.constexpr):
    """Base[rows[i] * stride + d] for d < dim as [len(rows), BLOCK_D] of `dtype`; masked rows read 0."""
    ptrs = Base + rows[:, None] * stride + offs_d[None, :]
    if MASKED:
        x = tl.load(ptrs, mask=row_mask[:, None] & (offs_d[None, :] < dim), other=0.0)
    else:
        if dim == offs_d.shape[0]:  # (compile time) power-of-two heads: no predicate on the hot loads
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=offs_d[None, :] < dim, other=0.0)
    return x.to(dtype)


@triton.jit
def _prefix_block(q, acc, m_i, l_i, r2t_row, Kb, Vb, n0, prefix, stride_bkt, stride_bvt, offs_d, offs_dv,
                  qk_scale, q_pos, logit_cap, window, HEAD_DIM: tl.constexpr, V_HEAD_DIM: tl.constexpr,
                  BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr):
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_mask = offs_n < prefix
    if MASKED:
        slots = tl.load(r2t_row + offs_n, mask=n_mask, other=0).to(tl.int64)
    else:
        slots = tl.load(r2t_row + offs_n).to(tl.int64)
    k = _load_rows(Kb, slots, stride_bkt, offs_d, HEAD_DIM, n_mask, q.dtype, MASKED)
    v = _load_rows(Vb, slots, stride_bvt, offs_dv, V_HEAD_DIM, n_mask, q.dtype, MASKED)
    if HAS_WINDOW:
        visible = n_mask[None, :] & (q_pos[:, None] - offs_n[None, :] <= window)
        acc, m_i, l_i = _attend_block(q, k, v, acc, m_i, l_i, qk_scale, visible, True, DOT_PRECISION,
                                      logit_cap, HAS_CAP)
    else:
        acc, m_i, l_i = _attend_block(q, k, v, acc, m_i, l_i, qk_scale, n_mask[None, :], MASKED, DOT_PRECISION,
                                      logit_cap, HAS_CAP)
    return acc, m_i, l_i


@triton.jit
def _new_block(q, acc, m_i, l_i, Ke, Ve, n0, offs_m, ext, stride_kt, stride_vt, offs_d, offs_dv, qk_scale,
               logit_cap, window, HEAD_DIM: tl.constexpr, V_HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr, HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr):
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_mask = offs_n < ext
    k = _load_rows(Ke, offs_n.to(tl.int64), stride_kt, offs_d, HEAD_DIM, n_mask, q.dtype, MASKED)
    v = _load_rows(Ve, offs_n.to(tl.int64), stride_vt, offs_dv, V_HEAD_DIM, n_mask, q.dtype, MASKED)
    causal = (offs_n[None, :] <= offs_m[:, None]) & n_mask[None, :]
    if HAS_WINDOW:
        visible = causal & (offs_m[:, None] - offs_n[None, :] <= window)
        acc, m_i, l_i = _attend_block(q, k, v, acc, m_i, l_i, qk_scale, visible, True, DOT_PRECISION,
                                      logit_cap, HAS_CAP)
    else:
        acc, m_i, l_i = _attend_block(q, k, v, acc, m_i, l_i, qk_scale, causal, MASKED, DOT_PRECISION,
                                      logit_cap, HAS_CAP)
    return acc, m_i, l_i


@triton.jit
def _extend_kernel(
    Q, KExt, VExt, Out, KBuf, VBuf, ReqToToken, ReqPoolIdx, PrefixLens, ExtendLens, StartLoc, Tiles,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_bkt, stride_bkh, stride_bvt, stride_bvh, stride_r2t,
    qk_scale, kv_group, num_heads, logit_cap, window,
    HEAD_DIM: tl.constexpr, V_HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
    HAS_PREFIX: tl.constexpr, HAS_CAP: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    tile = tl.program_id(0) // num_heads
    h = tl.program_id(0) % num_heads
    kv_head = h // kv_group
    b = tl.load(Tiles + 2 * tile)
    m_start = tl.load(Tiles + 2 * tile + 1)
    prefix = tl.load(PrefixLens + b).to(tl.int32)
    ext = tl.load(ExtendLens + b).to(tl.int32)
    q_start = tl.load(StartLoc + b).to(tl.int64)

    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_rows = q_start + offs_m
    q = tl.load(Q + q_rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=(offs_m[:, None] < ext) & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    r2t_row = ReqToToken + tl.load(ReqPoolIdx + b).to(tl.int64) * stride_r2t
    Kb = KBuf + kv_head * stride_bkh
    Vb = VBuf + kv_head * stride_bvh
    q_pos = prefix + offs_m
    # the first key any query of the tile sees; with a window, the blocks before it are skipped
    first_key = 0
    if HAS_WINDOW:
        first_key = tl.maximum(prefix + m_start - window, 0)
    if HAS_PREFIX:
        prefix_full = (prefix // BLOCK_N) * BLOCK_N
        for n0 in range((first_key // BLOCK_N) * BLOCK_N, prefix_full, BLOCK_N):
            acc, m_i, l_i = _prefix_block(q, acc, m_i, l_i, r2t_row, Kb, Vb, n0, prefix, stride_bkt, stride_bvt,
                                          offs_d, offs_dv, qk_scale, q_pos, logit_cap, window, HEAD_DIM, V_HEAD_DIM,
                                          BLOCK_N, False, DOT_PRECISION, HAS_CAP, HAS_WINDOW)
        for n0 in range(prefix_full, prefix, BLOCK_N):  # at most one tail block
            acc, m_i, l_i = _prefix_block(q, acc, m_i, l_i, r2t_row, Kb, Vb, n0, prefix, stride_bkt, stride_bvt,
                                          offs_d, offs_dv, qk_scale, q_pos, logit_cap, window, HEAD_DIM, V_HEAD_DIM,
                                          BLOCK_N, True, DOT_PRECISION, HAS_CAP, HAS_WINDOW)

    Ke = KExt + q_start * stride_kt + kv_head * stride_kh
    Ve = VExt + q_start * stride_vt + kv_head * stride_vh
    # BLOCK_M is a multiple of BLOCK_N, so keys [0, m_start) are whole blocks every query here sees
    # (but for the window's mask)
    first_new = (tl.maximum(first_key - prefix, 0) // BLOCK_N) * BLOCK_N
    for n0 in range(first_new, m_start, BLOCK_N):
        acc, m_i, l_i = _new_block(q, acc, m_i, l_i, Ke, Ve, n0, offs_m, ext, stride_kt, stride_vt, offs_d,
                                   offs_dv, qk_scale, logit_cap, window, HEAD_DIM, V_HEAD_DIM, BLOCK_N, False,
                                   DOT_PRECISION, HAS_CAP, HAS_WINDOW)
    for n0 in range(m_start, tl.minimum(m_start + BLOCK_M, ext), BLOCK_N):
        acc, m_i, l_i = _new_block(q, acc, m_i, l_i, Ke, Ve, n0, offs_m, ext, stride_kt, stride_vt, offs_d,
                                   offs_dv, qk_scale, logit_cap, window, HEAD_DIM, V_HEAD_DIM, BLOCK_N, True,
                                   DOT_PRECISION, HAS_CAP, HAS_WINDOW)

    if HAS_WINDOW:  # tile rows past the request's end may see no key in the window (they are not stored)
        l_i = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_i[:, None]
    tl.store(Out + q_rows[:, None] * stride_ot + h * stride_oh + offs_dv[None, :], out.to(Out.dtype.element_ty),
             mask=(offs_m[:, None] < ext) & (offs_dv[None, :] < V_HEAD_DIM))


def _check_extend_args(q, k_ext, v_ext, out, k_buf, v_buf, req_to_token, tiles: ExtendTiles, cfg: ExtendConfig) -> None:
    for name, t in (("q", q), ("k_ext", k_ext), ("v_ext", v_ext), ("out", out), ("k_buf", k_buf), ("v_buf", v_buf)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D [tokens, heads, dim], got shape {tuple(t.shape)}")
        check_last_dim_contiguous(name, t)
    if q.shape[1] % k_buf.shape[1] or k_ext.shape[1] != k_buf.shape[1] or v_ext.shape[1] != v_buf.shape[1]:
        raise ValueError(f"head counts disagree: q {q.shape[1]}, k_ext {k_ext.shape[1]}, k_buf {k_buf.shape[1]}")
    if not (q.shape[2] == k_ext.shape[2] == k_buf.shape[2]) or out.shape != (q.shape[0], q.shape[1], v_buf.shape[2]):
        raise ValueError(f"dims disagree: q {tuple(q.shape)}, k_ext {tuple(k_ext.shape)}, out {tuple(out.shape)}")
    if k_ext.shape[0] != q.shape[0] or v_ext.shape[0] != q.shape[0]:
        raise ValueError(f"k_ext/v_ext need {q.shape[0]} rows, got {k_ext.shape[0]}, {v_ext.shape[0]}")
    if req_to_token.dtype != torch.int32 or tiles.table.dtype != torch.int32:
        raise ValueError("req_to_token and the tile table must be int32")
    if tiles.block_m != cfg.block_m or cfg.block_m % cfg.block_n:
        raise ValueError(f"tiles planned for block_m {tiles.block_m}; config {cfg} (block_m must be a multiple of block_n)")
    check_same_device(q=q, k_ext=k_ext, out=out, k_buf=k_buf, req_to_token=req_to_token, tiles=tiles.table)


def extend_attention(q: torch.Tensor, k_ext: torch.Tensor, v_ext: torch.Tensor, out: torch.Tensor,
                     k_buf: torch.Tensor, v_buf: torch.Tensor, req_to_token: torch.Tensor,
                     req_pool_indices: torch.Tensor, prefix_lens: torch.Tensor, extend_lens: torch.Tensor,
                     extend_start_loc: torch.Tensor, tiles: ExtendTiles, sm_scale: float,
                     config: Optional[ExtendConfig] = None, logit_cap: float = 0.0, window: int = -1) -> torch.Tensor:
    """Write causal attention of the new tokens over prefix + new keys into `out` (module docstring;
    `logit_cap` 0 and `window` -1 are off)."""
    if logit_cap < 0 or window < -1:
        raise ValueError(f"logit_cap must be >= 0 and window >= -1, got {logit_cap}, {window}")
    head_dim, v_head_dim = q.shape[-1], v_buf.shape[-1]
    cfg = config or default_extend_config(head_dim, dot_in_fp32())
    _check_extend_args(q, k_ext, v_ext, out, k_buf, v_buf, req_to_token, tiles, cfg)
    num_heads = q.shape[1]
    grid = (tiles.table.shape[0] * num_heads,)
    if grid[0] == 0:
        return out
    _extend_kernel[grid](
        q, k_ext, v_ext, out, k_buf, v_buf, req_to_token, req_pool_indices, prefix_lens, extend_lens,
        extend_start_loc, tiles.table,
        q.stride(0), q.stride(1), k_ext.stride(0), k_ext.stride(1), v_ext.stride(0), v_ext.stride(1),
        out.stride(0), out.stride(1), k_buf.stride(0), k_buf.stride(1), v_buf.stride(0), v_buf.stride(1),
        req_to_token.stride(0), sm_scale * LOG2E, num_heads // k_buf.shape[1], num_heads, logit_cap * LOG2E, window,
        HEAD_DIM=head_dim, V_HEAD_DIM=v_head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        BLOCK_D=next_pow2(head_dim), BLOCK_DV=next_pow2(v_head_dim), DOT_F32=dot_in_fp32(),
        DOT_PRECISION=dot_precision(q.dtype), HAS_PREFIX=tiles.has_prefix, HAS_CAP=logit_cap > 0,
        HAS_WINDOW=window >= 0,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
