"""RMSNorm with an optional fused residual add, one program per row.

Without residual: out = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(x.dtype).
With residual:    s = (x + residual) rounded to x's dtype; returns (norm(s), s).
The rounding steps are the HF Llama order the torch layer (`runtime/layers/layernorm.py`) keeps,
so the kernel and the layer agree to the last bit up to the order of the mean's sum. The fused
form reads x and residual once and writes out and s once (the torch path makes ~6 passes).

Shapes: x, residual [..., N] with the last dimension contiguous (rows may be strided);
weight [N]; out [..., N] in torch's promotion of (weight, x) dtypes; N <= MAX_HIDDEN.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_last_dim_contiguous, check_same_device, next_pow2

MAX_HIDDEN = 65536


@triton.jit
def _rmsnorm_kernel(X, R, W, Out, SumOut, stride_x, stride_r, stride_o, stride_s, n_cols, eps,
                    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(SumOut + row * stride_s + offs, x, mask=mask)
    x32 = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x32 * x32, 0) / n_cols + tl.cast(eps, tl.float32))  # fp32 under Inductor too
    normed = (x32 * rstd).to(X.dtype.element_ty)
    w = tl.load(W + offs, mask=mask, other=0.0)
    tl.store(Out + row * stride_o + offs, (w.to(tl.float32) * normed.to(tl.float32)).to(Out.dtype.element_ty),
             mask=mask)


def _as_rows(name: str, x: torch.Tensor, n: int) -> torch.Tensor:
    check_last_dim_contiguous(name, x)
    rows = x.reshape(-1, n)  # a view for any x whose leading dims collapse (the usual [T, N] case)
    return rows


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float,
            residual: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """norm(x), or (norm(x + residual), x + residual) when `residual` is given (module docstring)."""
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"weight must have shape ({n},), got {tuple(weight.shape)}")
    if n > MAX_HIDDEN:
        raise ValueError(f"hidden size {n} exceeds the kernel's limit {MAX_HIDDEN}")
    if residual is not None and (residual.shape != x.shape):
        raise ValueError(f"residual shape {tuple(residual.shape)} differs from x {tuple(x.shape)}")
    check_same_device(x=x, weight=weight, **({"residual": residual} if residual is not None else {}))
    x2 = _as_rows("x", x, n)
    r2 = _as_rows("residual", residual, n) if residual is not None else x2
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    summed = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else out
    o2, s2 = out.view(-1, n), summed.view(-1, n)
    if x2.shape[0]:
        block = next_pow2(n)
        _rmsnorm_kernel[(x2.shape[0],)](
            x2, r2, weight, o2, s2, x2.stride(0), r2.stride(0), o2.stride(0), s2.stride(0), n, eps,
            HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=min(max(block // 512, 1), 16),
        )
    return out if residual is None else (out, summed)
