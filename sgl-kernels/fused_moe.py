"""Fused sparse MoE of SwiGLU experts (the Triton path of layers/moe.py; oracle: reference.fused_moe_ref).

Each token sends its hidden state to `top_k` experts: N = T * top_k (token, choice) slots, slot
s = t * top_k + j. `moe_align_block_size` sorts the slots by expert and pads each expert's run to a
multiple of BLOCK_M (padding slots hold the sentinel N), so every BLOCK_M-row block of the sorted
order belongs to one expert. Then two launches of one grouped-GEMM kernel, grid (blocks, cdiv(n, BLOCK_N)):
  1. act[s] = silu(x[s // top_k] @ w1[e]^T) * (x[s // top_k] @ w3[e]^T)  (gate and up rows of w13,
     both accumulated in one pass; rounded to x's dtype after each step as the torch path does);
  2. y[s] = topk_weights[s] * (act[s] @ w2[e]^T), float32; out[t] = sum_j y[t * top_k + j].
Shapes: x [T, H]; w13 [E, 2I, H]; w2 [E, H, I]; topk_weights [T, k] float32; topk_ids [T, k].
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, dot_in_fp32, dot_precision, next_pow2


def moe_align_block_size(topk_ids: torch.Tensor, block_m: int, num_experts: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted_slots int32 [L], block_experts int32 [L // block_m], num_padded int32 [1]) for topk_ids [T, k].

    sorted_slots lists the slots of expert 0, then expert 1, ..., each run padded with the sentinel
    T * k up to a multiple of block_m; block_experts[b] is the expert of rows b*block_m.., and only the
    first num_padded rows are used. L is an upper bound, so nothing is read back to the host (decode
    steps run inside CUDA graphs)."""
    flat = topk_ids.reshape(-1).long()
    n = flat.numel()
    # scatter_add, not bincount: bincount reads its maximum back to the host, which CUDA-graph capture forbids
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = padded.cumsum(0)
    order = torch.argsort(flat, stable=True)
    experts = flat[order]
    rank = torch.arange(n, device=flat.device) - (counts.cumsum(0) - counts)[experts]
    length = triton.cdiv(n + min(n, num_experts) * (block_m - 1), block_m) * block_m
    sorted_slots = torch.full((length,), n, dtype=torch.int32, device=flat.device)
    sorted_slots[(ends - padded)[experts] + rank] = order.to(torch.int32)
    block_starts = torch.arange(0, length, block_m, device=flat.device)
    block_experts = torch.searchsorted(ends, block_starts, right=True).clamp_max(num_experts - 1).to(torch.int32)
    return sorted_slots, block_experts, ends[-1:].to(torch.int32)


@triton.jit
def _moe_gemm_kernel(A, B, C, Weights, SortedSlots, BlockExperts, NumPadded, n, k, num_slots, a_row_div,
                     stride_am, stride_be, stride_bn, stride_cm,
                     SWIGLU: tl.constexpr, MUL_WEIGHT: tl.constexpr, DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """C[s, :n] for the slots s of one expert block: A[s // a_row_div] @ B[e, :n]^T (SWIGLU: silu of
    that times A @ B[e, n:2n]^T; MUL_WEIGHT: times Weights[s]). B's rows are contiguous in k."""
    pid_m = tl.program_id(0)
    if pid_m * BLOCK_M >= tl.load(NumPadded):
        return
    expert = tl.load(BlockExperts + pid_m).to(tl.int64)
    slots = tl.load(SortedSlots + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    m_mask = slots < num_slots
    a_rows = (slots // a_row_div).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n
    b_ptrs = B + expert * stride_be + offs_n[None, :].to(tl.int64) * stride_bn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < k
        a = tl.load(A + a_rows[:, None] * stride_am + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b_mask = k_mask[:, None] & n_mask[None, :]
        b = tl.load(b_ptrs + offs_k[:, None], mask=b_mask, other=0.0)  # [BLOCK_K, BLOCK_N]
        if DOT_F32:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc += tl.dot(a, b, input_precision=DOT_PRECISION)
        if SWIGLU:
            b_up = tl.load(b_ptrs + n * stride_bn + offs_k[:, None], mask=b_mask, other=0.0)
            if DOT_F32:
                b_up = b_up.to(tl.float32)
            acc_up += tl.dot(a, b_up, input_precision=DOT_PRECISION)
    dtype = A.dtype.element_ty
    out = acc.to(dtype).to(tl.float32)
    if SWIGLU:
        out = (out / (1.0 + tl.exp(-out))).to(dtype).to(tl.float32) * acc_up.to(dtype).to(tl.float32)
    if MUL_WEIGHT:
        out = out * tl.load(Weights + slots, mask=m_mask, other=0.0)[:, None]
    c_ptrs = C + slots[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(C.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def _launch(a, b, c, weights, align, block_m: int, num_slots: int, a_row_div: int, swiglu: bool) -> None:
    sorted_slots, block_experts, num_padded = align
    n, k = c.shape[1], b.shape[2]
    block_n, block_k = min(64, max(16, next_pow2(n))), min(64, max(16, next_pow2(k)))
    grid = (block_experts.numel(), triton.cdiv(n, block_n))
    _moe_gemm_kernel[grid](a, b, c, weights, sorted_slots, block_experts, num_padded, n, k, num_slots, a_row_div,
                           a.stride(0), b.stride(0), b.stride(1), c.stride(0),
                           SWIGLU=swiglu, MUL_WEIGHT=not swiglu, DOT_F32=dot_in_fp32(), DOT_PRECISION=dot_precision(a.dtype),
                           BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
    """The MoE output [T, H] in x's dtype (module docstring)."""
    num_experts, two_i, hidden = w13.shape
    if x.dim() != 2 or x.shape[1] != hidden or two_i % 2 or tuple(w2.shape) != (num_experts, hidden, two_i // 2):
        raise ValueError(f"fused_moe shapes do not fit: x {tuple(x.shape)}, w13 {tuple(w13.shape)}, w2 {tuple(w2.shape)}")
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must be [T, k]")
    if not (x.dtype == w13.dtype == w2.dtype):
        raise ValueError(f"x, w13 and w2 must share a dtype, got {x.dtype}, {w13.dtype}, {w2.dtype}")
    check_same_device(x=x, w13=w13, w2=w2, topk_ids=topk_ids)
    for name, t in (("x", x), ("w13", w13), ("w2", w2)):
        check_last_dim_contiguous(name, t)
    tokens, top_k = topk_ids.shape
    num_slots = tokens * top_k
    if num_slots == 0:
        return torch.zeros_like(x)
    block_m = 16 if num_slots <= 16 * num_experts else 64
    align = moe_align_block_size(topk_ids, block_m, num_experts)
    act = torch.empty(num_slots, two_i // 2, dtype=x.dtype, device=x.device)
    _launch(x, w13, act, topk_weights, align, block_m, num_slots, top_k, swiglu=True)
    y = torch.empty(num_slots, hidden, dtype=torch.float32, device=x.device)
    _launch(act, w2, y, topk_weights.float().contiguous(), align, block_m, num_slots, 1, swiglu=False)
    return y.view(tokens, top_k, hidden).sum(dim=1).to(x.dtype)
