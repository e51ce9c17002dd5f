"""One HiP pruning stage: score every candidate chunk of every query block by a shared bisection.

Semantics: `hip_prune_stage_ref` in `hip_reference.py` (the contract; its module docstring defines the
arguments). In short, for query block b and candidate chunk j = [left, min(left + chunk, p_min + 1)):
the block's queries are averaged in groups of `stride_q` (pooled rows); a bisection of
max(1, bit_length(chunk - 1)) steps scores, at each step, the middle key of both halves (tokens rl and
rr) as the max over the pooled rows and over ALL query heads, keeps the better half (left wins ties)
and the chunk's score is the running max of both branch scores along the path. Inactive chunks
(left < 0, left > p_min - sw_scan, INVALID padding) score -inf.

Kernel `_hip_prune_kernel`, grid (NB, cdiv(n, BLOCK_CHUNK)): one program per (query block, tile of
BLOCK_CHUNK candidate chunks).
  * The tile's `left` values are loaded first; a tile without an active chunk writes -inf and exits,
    so the cost follows the real context of each block, not the padded list length n (lists are
    sorted, active chunks first).
  * Per bisection step: the slots of rl and rr of every chunk of the tile are read from the block
    table once; then for each KV head, the pooled query rows of its G = H / KVH heads, an
    [G * rows, D] tile (rows = block_size_q // stride_q), are walked BLOCK_R rows at a time. Each
    row tile is rebuilt from q (stride_q loads; in streaming mode each query rotated first at
    min(p_i, n_active + sw_scan), in relative mode the average rotated at sw_scan + 1): a
    [256, 128] fp32 tile per KV head does not fit in registers, and q stays hot in L1/L2 since every
    step of every tile of the block reads the same rows. Against it, one branch at a time, the key
    of every chunk is gathered from the pool as two neox halves [BLOCK_CHUNK, D/2] (fp32/fp16/bf16/
    fp8 -> float32), rotated (streaming: at the chunk's index in the list; relative: 0 left, 1
    right) and scored by two tl.dot (one per half); the [BLOCK_R, BLOCK_CHUNK] scores are maxed over
    the valid rows and accumulated (max) over row tiles and KV heads. Only then is the branch chosen.
  Dot operands are q's dtype on GPUs (float32 models: "ieee" float32) and float32 under the
  interpreter (`dot_in_fp32`), accumulation in float32.

Kernel `_hip_prune_row_kernel`, used when a block pools to one row (block_size_q == stride_q: decode,
where a block is one query), grid (NB, cdiv(n, ROW_CHUNKS)) with a few chunks per program.
  * A decode step of a 1M-token request scores 4096 stage-1 chunks (and 1024 in each later stage):
    with 32 chunks per program the other kernel runs 32-128 programs on a 132-SM GPU, each walking
    the bisection steps x KV heads x branches one dependent gather after another (latency-bound:
    ~270 / 210 / 165 us per stage measured on an H100).
  * Here each program takes ROW_CHUNKS chunks (8, 4 with fp8 pools, fewer for more KV heads or a
    wider head) and gathers, per bisection step, the key of every chunk for ALL KV heads at once
    ([ROW_CHUNKS, KVH, D/2] twice), both branches before either is scored; the one pooled query row
    of each group member g is a [KVH, D/2] pair, and the score is a float32 multiply-and-sum (no
    tensor cores: one query row is a matrix-vector product). More programs, two gathers in flight
    per step. On an H200 at 1M keys the schedule average per layer went from 103.6 to 72.6 us.

Shapes: q [Nq, H, D] (scaled; float32/float16/bfloat16); k_buf [S, KVH, D] any float dtype;
block_table [R, T_max] int32/int64; blk_row, blk_q_start, blk_q_len, blk_pos, n_active [NB] int;
left [NB, n] int; cos, sin [P, D/2] float32 (only read when rope_mode != ROPE_NONE; may be None then).
Returns [NB, n] float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from sgl.kernels.hip_offload import TokenCache, cache_lookup, read_cached
from sgl.kernels.hip_reference import INVALID, ROPE_NONE, ROPE_RELATIVE, ROPE_STREAMING
from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, dot_in_fp32, dot_precision, next_pow2


@dataclass(frozen=True)
class PruneConfig:
    """Launch shape: BLOCK_CHUNK candidate chunks per program (capped by n), BLOCK_R pooled query
    rows per dot (capped by G * rows)."""

    block_chunk: int = 64
    block_r: int = 64
    num_warps: int = 4
    num_stages: int = 1
    row_chunks: int = 8  # chunks per program of the one-pooled-row kernel (decode), 16-bit pools
    row_chunks_fp8: int = 4  # the same with an fp8 pool (its conversion needs more registers)
    row_warps: int = 8
    one_row_kernel: bool = True  # False: one-row blocks take the general kernel too (benchmarks)


def default_prune_config(head_dim: int, interpreting: bool = False) -> PruneConfig:
    if interpreting:
        # the interpreter pays per op, not per element: big tiles, few programs
        return PruneConfig(block_chunk=32, block_r=64, num_warps=1, row_chunks=32, row_chunks_fp8=32, row_warps=1)
    # Compiled for sm_90 (bf16 / fp8 pools, D = 128, all rope modes, stage-1, stage-3 and decode
    # shapes): 32 chunks x 64 rows with 8 warps stays at 160-190 registers without spills, 64 chunks
    # spill. D <= 64 fits with 4 warps. The one-row kernel (Triton 3.6 and 3.9, sm_90, every rope
    # mode): 8 chunks x 8 warps has no spills with bf16 pools, 4 x 8 none with fp8 ones. On an H200
    # at 1M keys 8 x 8 gave the lowest refresh-step times of (2|4|8 chunks) x (4|8 warps).
    return PruneConfig(block_chunk=32, block_r=64, num_warps=8 if head_dim >= 128 else 4)


@triton.jit
def _rotate(x1, x2, c, s):
    """neox halves: rope([x1, x2]) = [x1 c - x2 s, x2 c + x1 s]."""
    return x1 * c - x2 * s, x2 * c + x1 * s


@triton.jit
def _dot_operand(x, Q, DOT_F32: tl.constexpr):
    """float32 under the interpreter (its bf16/fp8 tl.dot is wrong), q's dtype otherwise."""
    if DOT_F32:
        return x.to(tl.float32)
    else:
        return x.to(Q.dtype.element_ty)


@triton.jit
def _pooled_rows(Q, Cos, Sin, q_start, q_len, p_min, rope_cap, kv_head, r0,
                 stride_qt, stride_qh, stride_cos, stride_sin, half_dim: tl.constexpr,
                 GROUP: tl.constexpr, ROWS: tl.constexpr, STRIDE_Q: tl.constexpr, ROPE_MODE: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_HD: tl.constexpr):
    """Pooled rows r0 .. r0 + BLOCK_R of KV head `kv_head` (row r = query head kv_head * G + r // ROWS,
    pooled row r % ROWS) as two float32 halves [BLOCK_R, BLOCK_HD], and which rows hold a query."""
    offs_r = r0 + tl.arange(0, BLOCK_R)
    prow = offs_r % ROWS
    head = kv_head * GROUP + offs_r // ROWS
    r_in = offs_r < GROUP * ROWS
    offs_d = tl.arange(0, BLOCK_HD)
    d_mask = offs_d < half_dim
    acc1 = tl.zeros([BLOCK_R, BLOCK_HD], tl.float32)
    acc2 = tl.zeros([BLOCK_R, BLOCK_HD], tl.float32)
    cnt = tl.zeros([BLOCK_R], tl.float32)
    for j in range(STRIDE_Q):
        qi = prow * STRIDE_Q + j
        ok = r_in & (qi < q_len)
        m = ok[:, None] & d_mask[None, :]
        base = Q + (q_start + qi).to(tl.int64) * stride_qt + head.to(tl.int64) * stride_qh
        x1 = tl.load(base[:, None] + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(base[:, None] + half_dim + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
        if ROPE_MODE == 1:
            pos = tl.minimum(p_min + qi, rope_cap)
            c = tl.load(Cos + pos[:, None] * stride_cos + offs_d[None, :], mask=m, other=0.0)
            s = tl.load(Sin + pos[:, None] * stride_sin + offs_d[None, :], mask=m, other=0.0)
            x1, x2 = _rotate(x1, x2, c, s)
        acc1 += x1
        acc2 += x2
        cnt += ok.to(tl.float32)
    den = tl.maximum(cnt, 1.0)[:, None]
    row_ok = r_in & (prow * STRIDE_Q < q_len)
    return acc1 / den, acc2 / den, row_ok


@triton.jit
def _key_halves(K, slots, kv_head, active, stride_kt, stride_kh, half_dim: tl.constexpr, BLOCK_HD: tl.constexpr):
    """Keys of `slots` for one KV head as two float32 halves [BLOCK_CHUNK, BLOCK_HD]."""
    offs_d = tl.arange(0, BLOCK_HD)
    m = active[:, None] & (offs_d < half_dim)[None, :]
    base = K + slots[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :]
    k1 = tl.load(base, mask=m, other=0.0).to(tl.float32)
    k2 = tl.load(base + half_dim, mask=m, other=0.0).to(tl.float32)
    return k1, k2


@triton.jit
def _branch_scores(q1, q2, row_ok, K, Cos, Sin, slots, kv_head, active, offs_c, c_rel, s_rel,
                   stride_kt, stride_kh, stride_cos, stride_sin, half_dim: tl.constexpr,
                   ROPE_MODE: tl.constexpr, BLOCK_HD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """max over the valid rows of (pooled rows) . (rotated key of `slots`) -> [BLOCK_CHUNK] float32."""
    k1, k2 = _key_halves(K, slots, kv_head, active, stride_kt, stride_kh, half_dim, BLOCK_HD)
    if ROPE_MODE == 1:
        # streaming: both branches at the chunk's index in the list
        offs_d = tl.arange(0, BLOCK_HD)
        m = active[:, None] & (offs_d < half_dim)[None, :]
        c = tl.load(Cos + offs_c[:, None] * stride_cos + offs_d[None, :], mask=m, other=0.0)
        s = tl.load(Sin + offs_c[:, None] * stride_sin + offs_d[None, :], mask=m, other=0.0)
        k1, k2 = _rotate(k1, k2, c, s)
    elif ROPE_MODE == 2:
        k1, k2 = _rotate(k1, k2, c_rel, s_rel)
    d = tl.dot(q1, tl.trans(k1.to(q1.dtype)), input_precision=DOT_PRECISION)
    d = tl.dot(q2, tl.trans(k2.to(q1.dtype)), d, input_precision=DOT_PRECISION)
    return tl.max(tl.where(row_ok[:, None], d, float("-inf")), 0)


@triton.jit
def _tile(Left, BlkPos, Out, b, stride_lb, stride_ob, n, sw_scan, TILE: tl.constexpr, INVALID_POS: tl.constexpr):
    """This program's TILE candidate chunks of block b: (offsets, in range, output pointers, the
    block's first position, chunk starts, active)."""
    offs_c = tl.program_id(1) * TILE + tl.arange(0, TILE)
    c_mask = offs_c < n
    p_min = tl.load(BlkPos + b).to(tl.int64)
    lft = tl.load(Left + b * stride_lb + offs_c, mask=c_mask, other=INVALID_POS).to(tl.int64)
    active = c_mask & (lft >= 0) & (lft <= p_min - sw_scan) & (lft < INVALID_POS)
    return offs_c, c_mask, Out + b * stride_ob + offs_c, p_min, lft, active


@triton.jit
def _block_inputs(Table, BlkRow, BlkQStart, BlkQLen, NActive, b, stride_tr, sw_scan):
    """Block b's first query in q, its query count, its block-table row, and the position where
    streaming-mode query positions stop (its active chunks + sw_scan)."""
    q_start = tl.load(BlkQStart + b).to(tl.int64)
    q_len = tl.load(BlkQLen + b).to(tl.int32)
    table_row = Table + tl.load(BlkRow + b).to(tl.int64) * stride_tr
    rope_cap = tl.load(NActive + b).to(tl.int64) + sw_scan
    return q_start, q_len, table_row, rope_cap


@triton.jit
def _chunk_bounds(lft, active, p_min, chunk_size):
    """[lo, hi) of each chunk (never past the block's first query; [0, 1) when inactive), int32."""
    lo = tl.where(active, lft, 0)
    hi = tl.where(active, tl.minimum(lft + chunk_size, p_min + 1), lo + 1)
    return lo.to(tl.int32), hi.to(tl.int32)


@triton.jit
def _relative_tables(Cos, Sin, stride_cos, stride_sin, sw_scan, ROPE_MODE: tl.constexpr, HALF_DIM: tl.constexpr,
                     BLOCK_HD: tl.constexpr):
    """Relative mode's rotations ([1, BLOCK_HD] each): keys at 0 (left branch) and 1 (right branch),
    the pooled rows at sw_scan + 1; zeros (never used) in the other modes."""
    offs_d = tl.arange(0, BLOCK_HD)
    m = (offs_d < HALF_DIM) & (ROPE_MODE == 2)
    cl = tl.load(Cos + offs_d, mask=m, other=0.0)[None, :]
    sl = tl.load(Sin + offs_d, mask=m, other=0.0)[None, :]
    cr = tl.load(Cos + stride_cos + offs_d, mask=m, other=0.0)[None, :]
    sr = tl.load(Sin + stride_sin + offs_d, mask=m, other=0.0)[None, :]
    cq = tl.load(Cos + (sw_scan + 1) * stride_cos + offs_d, mask=m, other=0.0)[None, :]
    sq = tl.load(Sin + (sw_scan + 1) * stride_sin + offs_d, mask=m, other=0.0)[None, :]
    return cl, sl, cr, sr, cq, sq


@triton.jit
def _probes(lo, hi):
    """The bisection step's middle and the probed token of each half."""
    mid = (lo + hi) // 2
    return mid, (lo + mid) // 2, (mid + hi) // 2


@triton.jit
def _narrow(lo, hi, mid, s_l, s_r, best):
    """Keep the better half (ties go left); the chunk's score is the best met on its path."""
    go_left = s_l >= s_r
    narrow = (hi - lo) > 1
    new_hi = tl.where(narrow & go_left, mid, hi)
    lo = tl.where(narrow & go_left, lo, tl.where(narrow, mid, lo))
    return lo, new_hi, tl.maximum(best, tl.maximum(s_l, s_r))


@triton.jit
def _hip_prune_kernel(
    Q, K, Table, BlkRow, BlkQStart, BlkQLen, BlkPos, Left, NActive, Cos, Sin, Out,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_tr, stride_lb, stride_ob, stride_cos, stride_sin,
    n, kv_heads, chunk_size, sw_scan,
    HALF_DIM: tl.constexpr, GROUP: tl.constexpr, ROWS: tl.constexpr, STRIDE_Q: tl.constexpr, N_ITERS: tl.constexpr,
    ROPE_MODE: tl.constexpr, INVALID_POS: tl.constexpr,
    BLOCK_CHUNK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_HD: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_c, c_mask, out_ptr, p_min, lft, active = _tile(Left, BlkPos, Out, b, stride_lb, stride_ob, n, sw_scan,
                                                        BLOCK_CHUNK, INVALID_POS)
    if tl.max(active.to(tl.int32), 0) == 0:
        # the whole tile is in the future of the block's first query, or padding
        tl.store(out_ptr, tl.full([BLOCK_CHUNK], float("-inf"), tl.float32), mask=c_mask)
        return

    q_start, q_len, table_row, rope_cap = _block_inputs(Table, BlkRow, BlkQStart, BlkQLen, NActive, b, stride_tr,
                                                        sw_scan)
    p_min32 = p_min.to(tl.int32)
    lo, hi = _chunk_bounds(lft, active, p_min, chunk_size)
    cl, sl, cr, sr, cq, sq = _relative_tables(Cos, Sin, stride_cos, stride_sin, sw_scan, ROPE_MODE, HALF_DIM, BLOCK_HD)

    best = tl.full([BLOCK_CHUNK], float("-inf"), tl.float32)
    for _ in range(N_ITERS):
        mid, rl, rr = _probes(lo, hi)
        slot_l = tl.load(table_row + rl, mask=active, other=0).to(tl.int64)
        slot_r = tl.load(table_row + rr, mask=active, other=0).to(tl.int64)
        s_l = tl.full([BLOCK_CHUNK], float("-inf"), tl.float32)
        s_r = tl.full([BLOCK_CHUNK], float("-inf"), tl.float32)
        for kv_head in range(kv_heads):
            for r0 in range(0, GROUP * ROWS, BLOCK_R):
                q1, q2, row_ok = _pooled_rows(Q, Cos, Sin, q_start, q_len, p_min32, rope_cap, kv_head, r0,
                                              stride_qt, stride_qh, stride_cos, stride_sin, HALF_DIM,
                                              GROUP, ROWS, STRIDE_Q, ROPE_MODE, BLOCK_R, BLOCK_HD)
                if ROPE_MODE == 2:
                    q1, q2 = _rotate(q1, q2, cq, sq)
                q1 = _dot_operand(q1, Q, DOT_F32)
                q2 = _dot_operand(q2, Q, DOT_F32)
                # one branch at a time: only one pair of key halves is live next to the query tile
                s_l = tl.maximum(s_l, _branch_scores(q1, q2, row_ok, K, Cos, Sin, slot_l, kv_head, active, offs_c,
                                                     cl, sl, stride_kt, stride_kh, stride_cos, stride_sin, HALF_DIM,
                                                     ROPE_MODE, BLOCK_HD, DOT_PRECISION))
                s_r = tl.maximum(s_r, _branch_scores(q1, q2, row_ok, K, Cos, Sin, slot_r, kv_head, active, offs_c,
                                                     cr, sr, stride_kt, stride_kh, stride_cos, stride_sin, HALF_DIM,
                                                     ROPE_MODE, BLOCK_HD, DOT_PRECISION))
        lo, hi, best = _narrow(lo, hi, mid, s_l, s_r, best)
    tl.store(out_ptr, tl.where(active, best, float("-inf")), mask=c_mask)


@triton.jit
def _row_query(Q, Cos, Sin, q_start, q_len, p_min, rope_cap, g, offs_h, h_mask,
               stride_qt, stride_qh, stride_cos, stride_sin, cq, sq,
               HALF_DIM: tl.constexpr, GROUP: tl.constexpr, STRIDE_Q: tl.constexpr, ROPE_MODE: tl.constexpr,
               BLOCK_HD: tl.constexpr):
    """The block's one pooled row for query heads kv * GROUP + g of every KV head: two float32
    halves [BLOCK_KVH, BLOCK_HD] (the mean of its first min(q_len, STRIDE_Q) queries, each rotated
    first in streaming mode; the mean rotated at sw_scan + 1 in relative mode)."""
    offs_d = tl.arange(0, BLOCK_HD)
    m = h_mask[:, None] & (offs_d < HALF_DIM)[None, :]
    head = offs_h * GROUP + g
    acc1 = tl.zeros([offs_h.shape[0], BLOCK_HD], tl.float32)
    acc2 = tl.zeros([offs_h.shape[0], BLOCK_HD], tl.float32)
    for j in range(STRIDE_Q):
        # a block-shaped condition (the interpreter refuses a scalar one and'ed into a mask)
        qm = m & ((tl.zeros_like(offs_h) + q_len) > j)[:, None]
        base = Q + (q_start + j) * stride_qt + head.to(tl.int64)[:, None] * stride_qh + offs_d[None, :]
        x1 = tl.load(base, mask=qm, other=0.0).to(tl.float32)
        x2 = tl.load(base + HALF_DIM, mask=qm, other=0.0).to(tl.float32)
        if ROPE_MODE == 1:
            pos = tl.minimum(p_min + j, rope_cap)
            c = tl.load(Cos + pos * stride_cos + offs_d, mask=offs_d < HALF_DIM, other=0.0)[None, :]
            s = tl.load(Sin + pos * stride_sin + offs_d, mask=offs_d < HALF_DIM, other=0.0)[None, :]
            x1, x2 = _rotate(x1, x2, c, s)
        acc1 += x1
        acc2 += x2
    den = tl.maximum(tl.minimum(q_len, STRIDE_Q), 1).to(tl.float32)
    acc1 = acc1 / den
    acc2 = acc2 / den
    if ROPE_MODE == 2:
        acc1, acc2 = _rotate(acc1, acc2, cq, sq)
    return acc1, acc2


@triton.jit
def _row_keys(K, Bank, Page, Touch, Cos, Sin, slots, active, offs_c, offs_h, h_mask, c_rel, s_rel,
              stride_kt, stride_kh, stride_cos, stride_sin,
              HALF_DIM: tl.constexpr, ROPE_MODE: tl.constexpr, BLOCK_HD: tl.constexpr, OFFLOAD: tl.constexpr):
    """The key of `slots` for every KV head, rotated, as two float32 halves [ROW_CHUNKS, BLOCK_KVH, BLOCK_HD].
    OFFLOAD: K is host memory, read only for the tokens the cache (Bank, Page) misses; every read
    token is marked in Touch (sgl.kernels.hip_offload)."""
    offs_d = tl.arange(0, BLOCK_HD)
    d_mask = offs_d < HALF_DIM
    m = active[:, None, None] & h_mask[None, :, None] & d_mask[None, None, :]
    inner = offs_h[None, :, None] * stride_kh + offs_d[None, None, :]
    crow = cache_lookup(Page, Touch, slots, active, OFFLOAD)
    hit = (crow >= 0)[:, None, None]
    k_off = slots[:, None, None] * stride_kt + inner
    c_off = tl.maximum(crow, 0)[:, None, None] * stride_kt + inner
    # one gather for every KV head
    k1 = read_cached(K, Bank, k_off, c_off, hit, m, OFFLOAD).to(tl.float32)
    k2 = read_cached(K, Bank, k_off + HALF_DIM, c_off + HALF_DIM, hit, m, OFFLOAD).to(tl.float32)
    if ROPE_MODE == 1:
        cm = active[:, None] & d_mask[None, :]
        c = tl.load(Cos + offs_c[:, None] * stride_cos + offs_d[None, :], mask=cm, other=0.0)[:, None, :]
        s = tl.load(Sin + offs_c[:, None] * stride_sin + offs_d[None, :], mask=cm, other=0.0)[:, None, :]
        k1, k2 = _rotate(k1, k2, c, s)
    elif ROPE_MODE == 2:
        k1, k2 = _rotate(k1, k2, c_rel[None, :, :], s_rel[None, :, :])
    return k1, k2


@triton.jit
def _row_both_scores(Q, Cos, Sin, kl1, kl2, kr1, kr2, q_len, q_start, p_min, rope_cap, offs_h, h_mask, cq, sq,
                     stride_qt, stride_qh, stride_cos, stride_sin,
                     HALF_DIM: tl.constexpr, GROUP: tl.constexpr, STRIDE_Q: tl.constexpr,
                     ROPE_MODE: tl.constexpr, BLOCK_HD: tl.constexpr):
    """max over all query heads of (pooled row) . key, for the left and the right keys -> 2 x [ROW_CHUNKS]."""
    s_l = tl.full([kl1.shape[0]], float("-inf"), tl.float32)
    s_r = tl.full([kl1.shape[0]], float("-inf"), tl.float32)
    for g in tl.static_range(GROUP):
        q1, q2 = _row_query(Q, Cos, Sin, q_start, q_len, p_min, rope_cap, g, offs_h, h_mask,
                            stride_qt, stride_qh, stride_cos, stride_sin, cq, sq,
                            HALF_DIM, GROUP, STRIDE_Q, ROPE_MODE, BLOCK_HD)
        sl = tl.sum(kl1 * q1[None, :, :], 2) + tl.sum(kl2 * q2[None, :, :], 2)  # [C, KVH]
        sr = tl.sum(kr1 * q1[None, :, :], 2) + tl.sum(kr2 * q2[None, :, :], 2)
        s_l = tl.maximum(s_l, tl.max(tl.where(h_mask[None, :], sl, float("-inf")), 1))
        s_r = tl.maximum(s_r, tl.max(tl.where(h_mask[None, :], sr, float("-inf")), 1))
    ok = q_len > 0
    return tl.where(ok, s_l, float("-inf")), tl.where(ok, s_r, float("-inf"))


@triton.jit
def _hip_prune_row_kernel(
    Q, K, Bank, Page, Touch, Table, BlkRow, BlkQStart, BlkQLen, BlkPos, Left, NActive, Cos, Sin, Out,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_tr, stride_lb, stride_ob, stride_cos, stride_sin,
    n, chunk_size, sw_scan,
    HALF_DIM: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, STRIDE_Q: tl.constexpr,
    N_ITERS: tl.constexpr, ROPE_MODE: tl.constexpr, INVALID_POS: tl.constexpr,
    ROW_CHUNKS: tl.constexpr, BLOCK_KVH: tl.constexpr, BLOCK_HD: tl.constexpr, OFFLOAD: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_c, c_mask, out_ptr, p_min, lft, active = _tile(Left, BlkPos, Out, b, stride_lb, stride_ob, n, sw_scan,
                                                        ROW_CHUNKS, INVALID_POS)
    if tl.max(active.to(tl.int32), 0) == 0:
        tl.store(out_ptr, tl.full([ROW_CHUNKS], float("-inf"), tl.float32), mask=c_mask)
        return

    q_start, q_len, table_row, rope_cap = _block_inputs(Table, BlkRow, BlkQStart, BlkQLen, NActive, b, stride_tr,
                                                        sw_scan)
    lo, hi = _chunk_bounds(lft, active, p_min, chunk_size)
    cl, sl, cr, sr, cq, sq = _relative_tables(Cos, Sin, stride_cos, stride_sin, sw_scan, ROPE_MODE, HALF_DIM, BLOCK_HD)
    offs_h = tl.arange(0, BLOCK_KVH)
    h_mask = offs_h < KV_HEADS

    best = tl.full([ROW_CHUNKS], float("-inf"), tl.float32)
    for _ in range(N_ITERS):
        mid, rl, rr = _probes(lo, hi)
        slot_l = tl.load(table_row + rl, mask=active, other=0).to(tl.int64)
        slot_r = tl.load(table_row + rr, mask=active, other=0).to(tl.int64)
        # both branches' keys are gathered before either is scored: two loads in flight per step
        kl1, kl2 = _row_keys(K, Bank, Page, Touch, Cos, Sin, slot_l, active, offs_c, offs_h, h_mask,
                             cl, sl, stride_kt, stride_kh, stride_cos, stride_sin, HALF_DIM, ROPE_MODE,
                             BLOCK_HD, OFFLOAD)
        kr1, kr2 = _row_keys(K, Bank, Page, Touch, Cos, Sin, slot_r, active, offs_c, offs_h, h_mask,
                             cr, sr, stride_kt, stride_kh, stride_cos, stride_sin, HALF_DIM, ROPE_MODE,
                             BLOCK_HD, OFFLOAD)
        s_l, s_r = _row_both_scores(Q, Cos, Sin, kl1, kl2, kr1, kr2, q_len, q_start, p_min, rope_cap, offs_h, h_mask,
                                    cq, sq, stride_qt, stride_qh, stride_cos, stride_sin,
                                    HALF_DIM, GROUP, STRIDE_Q, ROPE_MODE, BLOCK_HD)
        lo, hi, best = _narrow(lo, hi, mid, s_l, s_r, best)
    tl.store(out_ptr, tl.where(active, best, float("-inf")), mask=c_mask)


_INT_DTYPES = (torch.int32, torch.int64)


def _check_args(q, k_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active,
                chunk_size, stride_q, rope_mode, cos, sin, block_size_q) -> None:
    if q.dim() != 3:
        raise ValueError(f"q must be [Nq, H, D], got shape {tuple(q.shape)}")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    if k_buf.dim() != 3 or k_buf.shape[2] != q.shape[2]:
        raise ValueError(f"k_buf must be [S, KVH, {q.shape[2]}], got shape {tuple(k_buf.shape)}")
    if not k_buf.dtype.is_floating_point:
        raise ValueError(f"k_buf must be a float tensor, got {k_buf.dtype}")
    if k_buf.shape[1] == 0 or q.shape[1] % k_buf.shape[1]:
        raise ValueError(f"k_buf: query heads {q.shape[1]} must be a multiple of KV heads {k_buf.shape[1]}")
    if q.shape[2] % 2:
        raise ValueError(f"q: head dim must be even (neox halves), got {q.shape[2]}")
    if block_table.dim() != 2 or block_table.dtype not in _INT_DTYPES:
        raise ValueError(f"block_table must be a 2-D int32/int64 tensor, "
                         f"got {tuple(block_table.shape)} {block_table.dtype}")
    if left.dim() != 2 or left.dtype not in _INT_DTYPES:
        raise ValueError(f"left must be a 2-D int32/int64 tensor, got {tuple(left.shape)} {left.dtype}")
    nb = left.shape[0]
    for name, t in (("blk_row", blk_row), ("blk_q_start", blk_q_start), ("blk_q_len", blk_q_len),
                    ("blk_pos", blk_pos), ("n_active", n_active)):
        if t.dim() != 1 or t.shape[0] != nb or t.dtype not in _INT_DTYPES:
            raise ValueError(f"{name} must be a [{nb}] int32/int64 tensor, got {tuple(t.shape)} {t.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if stride_q < 1:
        raise ValueError(f"stride_q must be >= 1, got {stride_q}")
    if block_size_q < 1 or block_size_q % stride_q:
        raise ValueError(f"block_size_q must be a positive multiple of stride_q={stride_q}, got {block_size_q}")
    if rope_mode not in (ROPE_NONE, ROPE_STREAMING, ROPE_RELATIVE):
        raise ValueError(f"rope_mode must be 0 (none), 1 (streaming) or 2 (relative), got {rope_mode}")
    if rope_mode != ROPE_NONE:
        for name, t in (("cos", cos), ("sin", sin)):
            if t is None or t.dim() != 2 or t.shape[1] != q.shape[2] // 2 or t.dtype != torch.float32:
                got = None if t is None else (tuple(t.shape), t.dtype)
                raise ValueError(f"{name} must be a [P, {q.shape[2] // 2}] float32 table, got {got}")
            check_last_dim_contiguous(name, t)
    for name, t in (("q", q), ("k_buf", k_buf), ("block_table", block_table), ("left", left)):
        check_last_dim_contiguous(name, t)
    tensors = dict(q=q, k_buf=k_buf, block_table=block_table, blk_row=blk_row, blk_q_start=blk_q_start,
                   blk_q_len=blk_q_len, blk_pos=blk_pos, left=left, n_active=n_active)
    if rope_mode != ROPE_NONE:
        tensors.update(cos=cos, sin=sin)
    check_same_device(**tensors)


def hip_prune_stage(q, k_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active,
                    chunk_size, stride_q, sw_scan, rope_mode, cos, sin, block_size_q, *,
                    config: Optional[PruneConfig] = None, cache: Optional[TokenCache] = None) -> torch.Tensor:
    """Score every candidate chunk of one pruning stage -> [NB, n] float32 (-inf where inactive).

    Same arguments and result as `hip_prune_stage_ref` (see the module docstrings). `cache`: k_buf is
    an offloaded (host) pool read through this GPU cache (sgl.kernels.hip_offload); one-row blocks
    (decode) only."""
    chunk_size, stride_q, sw_scan, rope_mode, block_size_q = (int(chunk_size), int(stride_q), int(sw_scan),
                                                              int(rope_mode), int(block_size_q))
    _check_args(q, k_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active,
                chunk_size, stride_q, rope_mode, cos, sin, block_size_q)
    nb, n = left.shape
    out = torch.empty((nb, n), dtype=torch.float32, device=q.device)
    if nb == 0 or n == 0:
        return out
    heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = k_buf.shape[1]
    group = heads // kv_heads
    rows = block_size_q // stride_q
    half = head_dim // 2
    cfg = config or default_prune_config(head_dim, dot_in_fp32())
    block_chunk = max(16, min(next_pow2(cfg.block_chunk), next_pow2(n)))
    block_r = max(16, min(next_pow2(cfg.block_r), next_pow2(group * rows)))
    if rope_mode == ROPE_NONE:
        cos = sin = out  # never read
        stride_cos = stride_sin = 0
    else:
        stride_cos, stride_sin = cos.stride(0), sin.stride(0)
    blk_row, blk_q_start, blk_q_len, blk_pos, n_active = (
        t.contiguous() for t in (blk_row, blk_q_start, blk_q_len, blk_pos, n_active))
    if cache is not None:
        if rows != 1 or not cfg.one_row_kernel:
            raise ValueError("hip_prune_stage: a cache is read by the one-row (decode) kernel only")
        cache.check(k_buf)
        bank, page, touch = cache.bank_k, cache.page, cache.touch
    else:
        bank, page, touch = k_buf, block_table, out  # never read
    if rows == 1 and cfg.one_row_kernel:
        per_program = cfg.row_chunks if k_buf.element_size() > 1 else cfg.row_chunks_fp8
        # the tuned shapes hold [chunks, 8 KV heads, 64] key halves: more heads or a wider head
        # take fewer chunks per program, so the tile (and the registers) stay that size
        tile = next_pow2(kv_heads) * max(16, next_pow2(half))
        per_program = max(1, min(per_program, per_program * 8 * 64 // tile))
        row_chunks = max(1, min(next_pow2(per_program), next_pow2(n)))
        _hip_prune_row_kernel[(nb, triton.cdiv(n, row_chunks))](
            q, k_buf, bank, page, touch, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active, cos, sin, out,
            q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), block_table.stride(0), left.stride(0),
            out.stride(0), stride_cos, stride_sin,
            n, chunk_size, sw_scan,
            HALF_DIM=half, KV_HEADS=kv_heads, GROUP=group, STRIDE_Q=stride_q,
            N_ITERS=max(1, (chunk_size - 1).bit_length()), ROPE_MODE=rope_mode, INVALID_POS=INVALID,
            ROW_CHUNKS=row_chunks, BLOCK_KVH=next_pow2(kv_heads), BLOCK_HD=max(16, next_pow2(half)),
            OFFLOAD=cache is not None, num_warps=cfg.row_warps, num_stages=1,
        )
        return out
    grid = (nb, triton.cdiv(n, block_chunk))
    _hip_prune_kernel[grid](
        q, k_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active, cos, sin, out,
        q.stride(0), q.stride(1), k_buf.stride(0), k_buf.stride(1), block_table.stride(0), left.stride(0),
        out.stride(0), stride_cos, stride_sin,
        n, kv_heads, chunk_size, sw_scan,
        HALF_DIM=half, GROUP=group, ROWS=rows, STRIDE_Q=stride_q, N_ITERS=max(1, (chunk_size - 1).bit_length()),
        ROPE_MODE=rope_mode, INVALID_POS=INVALID,
        BLOCK_CHUNK=block_chunk, BLOCK_R=block_r, BLOCK_HD=max(16, next_pow2(half)),
        DOT_F32=dot_in_fp32(), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
