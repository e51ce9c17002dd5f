"""Rotary position embedding of q and k in one launch (neox or GPT-J channel pairing).

For token t at position p and channel pair i < R/2 (R = rotary_dim = 2 * len(inv_freq)):
angle = p * inv_freq[i]; (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin). Neox style pairs channel i
with i + R/2; GPT-J style pairs 2i with 2i + 1. Channels past R are copied unchanged.
Scaled variants (linear, llama3) need no kernel change: their effect is all in inv_freq, which the
caller precomputes (`runtime/layers/rotary.py`).

Angles are formed in float64 (like the torch layer): in float32, p * inv_freq is off by ~1e-3 rad
at p = 8K and ~0.1 rad at 1M. The float64 angle is reduced to [-pi, pi] with 2*pi split into two
float32-exact parts (Triton materialises float literals as float32, and one float32 2*pi would be
off by 0.03 rad after 1.6e5 turns), then cos/sin run in float32 on the reduced angle (error
~2e-7, far below bf16's resolution); no float64 transcendental is needed.

Grid (T, 2): program (t, 0) rotates all query heads of token t, (t, 1) all key heads, as a
[BLOCK_HEADS, R/2] tile per half. Shapes: positions [T] int; q [T, H * D], k [T, KVH * D] (rows may
be strided, e.g. slices of a fused qkv); inv_freq [R/2] float64 (float32 accepted); outputs are
new tensors shaped and typed like q and k.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, next_pow2


@triton.jit
def _rotate_heads(X, Out, stride_x, stride_o, t, n_heads, cos, sin, offs_h, offs_i, offs_tail,
                  HEAD_DIM: tl.constexpr, HALF: tl.constexpr, IS_NEOX: tl.constexpr, HAS_TAIL: tl.constexpr):
    """Rotate every head of row t of X into Out; cos/sin [1, BLOCK_HALF] float32."""
    h_mask = offs_h[:, None] < n_heads
    pair_mask = h_mask & (offs_i[None, :] < HALF)
    if IS_NEOX:
        c1 = offs_i
        c2 = offs_i + HALF
    else:
        c1 = 2 * offs_i
        c2 = 2 * offs_i + 1
    base_x = X + t * stride_x + offs_h[:, None] * HEAD_DIM
    base_o = Out + t * stride_o + offs_h[:, None] * HEAD_DIM
    x1 = tl.load(base_x + c1[None, :], mask=pair_mask, other=0.0).to(tl.float32)
    x2 = tl.load(base_x + c2[None, :], mask=pair_mask, other=0.0).to(tl.float32)
    tl.store(base_o + c1[None, :], (x1 * cos - x2 * sin).to(Out.dtype.element_ty), mask=pair_mask)
    tl.store(base_o + c2[None, :], (x2 * cos + x1 * sin).to(Out.dtype.element_ty), mask=pair_mask)
    if HAS_TAIL:
        tail_mask = h_mask & (offs_tail[None, :] < HEAD_DIM)
        tail = tl.load(base_x + offs_tail[None, :], mask=tail_mask, other=0.0)
        tl.store(base_o + offs_tail[None, :], tail, mask=tail_mask)


@triton.jit
def _reduce_angle(angle):
    """float64 angle -> the float32 angle in [-pi, pi] with the same cos/sin (Cody-Waite: 2*pi =
    6.2831854820251465 - 1.7484555314695172e-07, both float32-exact, products exact in float64)."""
    turns = tl.floor(angle * 0.15915494309189535 + 0.5)  # nearest whole turn; 1/(2 pi) need not be exact
    return ((angle - turns * 6.2831854820251465) - turns * -1.7484555314695172e-07).to(tl.float32)


@triton.jit
def _rope_kernel(Pos, InvFreq, Q, K, QOut, KOut, stride_q, stride_k, stride_qo, stride_ko, n_q_heads, n_k_heads,
                 HEAD_DIM: tl.constexpr, HALF: tl.constexpr, IS_NEOX: tl.constexpr, HAS_TAIL: tl.constexpr,
                 BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_TAIL: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs_i = tl.arange(0, BLOCK_HALF)
    angle = tl.load(Pos + t).to(tl.float64) * tl.load(InvFreq + offs_i, mask=offs_i < HALF, other=0.0).to(tl.float64)
    reduced = _reduce_angle(angle)
    cos = tl.cos(reduced)[None, :]
    sin = tl.sin(reduced)[None, :]
    offs_h = tl.arange(0, BLOCK_HEADS)
    offs_tail = 2 * HALF + tl.arange(0, BLOCK_TAIL)
    if tl.program_id(1) == 0:
        _rotate_heads(Q, QOut, stride_q, stride_qo, t, n_q_heads, cos, sin, offs_h, offs_i, offs_tail,
                      HEAD_DIM, HALF, IS_NEOX, HAS_TAIL)
    else:
        _rotate_heads(K, KOut, stride_k, stride_ko, t, n_k_heads, cos, sin, offs_h, offs_i, offs_tail,
                      HEAD_DIM, HALF, IS_NEOX, HAS_TAIL)


def _check_rope_args(positions, q, k, inv_freq, head_size) -> None:
    if q.dim() != 2 or k.dim() != 2 or positions.dim() != 1:
        raise ValueError(f"need q [T, H*D], k [T, KVH*D], positions [T]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(positions.shape)}")
    if not (q.shape[0] == k.shape[0] == positions.shape[0]):
        raise ValueError(f"token counts differ: q {q.shape[0]}, k {k.shape[0]}, positions {positions.shape[0]}")
    if q.shape[1] % head_size or k.shape[1] % head_size:
        raise ValueError(f"head_size {head_size} must divide q width {q.shape[1]} and k width {k.shape[1]}")
    if 2 * inv_freq.numel() > head_size:
        raise ValueError(f"rotary dim {2 * inv_freq.numel()} exceeds head_size {head_size}")
    check_last_dim_contiguous("q", q)
    check_last_dim_contiguous("k", k)
    check_same_device(positions=positions, q=q, k=k, inv_freq=inv_freq)


def apply_rope(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, inv_freq: torch.Tensor,
               head_size: int, is_neox: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotated copies of q and k (module docstring)."""
    _check_rope_args(positions, q, k, inv_freq, head_size)
    half = inv_freq.numel()
    q_out, k_out = torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if q.shape[0] == 0:
        return q_out, k_out
    n_q, n_k = q.shape[1] // head_size, k.shape[1] // head_size
    tail = head_size - 2 * half
    block_heads = next_pow2(max(n_q, n_k))
    _rope_kernel[(q.shape[0], 2)](
        positions, inv_freq, q, k, q_out, k_out, q.stride(0), k.stride(0), q_out.stride(0), k_out.stride(0), n_q, n_k,
        HEAD_DIM=head_size, HALF=half, IS_NEOX=is_neox, HAS_TAIL=tail > 0, BLOCK_HEADS=block_heads,
        BLOCK_HALF=next_pow2(half), BLOCK_TAIL=next_pow2(max(tail, 1)),
        num_warps=4 if block_heads * half >= 1024 else 2,
    )
    return q_out, k_out
