"""SiLU-and-multiply: [..., 2d] -> silu(x[..., :d]) * x[..., d:] in one pass.

silu(g) = g / (1 + exp(-g)) in float32, rounded to x's dtype, then multiplied by the up half and
rounded again: the two roundings of the torch layer (`F.silu(gate) * up`), so both agree.
Grid (rows, cdiv(d, BLOCK)). Shapes: x [..., 2d] with contiguous last dimension; out [..., d].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_last_dim_contiguous, next_pow2


@triton.jit
def _silu_and_mul_kernel(X, Out, stride_x, stride_o, d, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < d
    gate = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(X + row * stride_x + d + offs, mask=mask, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)
    tl.store(Out + row * stride_o + offs, (act.to(tl.float32) * up.to(tl.float32)).to(Out.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x [..., 2d] (module docstring)."""
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul needs an even last dimension, got {x.shape[-1]}")
    check_last_dim_contiguous("x", x)
    d = x.shape[-1] // 2
    x2 = x.reshape(-1, x.shape[-1])
    out = torch.empty(x.shape[:-1] + (d,), dtype=x.dtype, device=x.device)
    o2 = out.view(-1, d)
    if x2.shape[0] and d:
        block = min(next_pow2(d), 1024)
        _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](x2, o2, x2.stride(0), o2.stride(0), d,
                                                                 BLOCK=block, num_warps=4)
    return out
