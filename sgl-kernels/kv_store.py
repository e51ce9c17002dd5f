"""KV store: write the new tokens' K and V into their pool slots in one launch.

k_buf[loc[t]] = k[t] and v_buf[loc[t]] = v[t], cast to the pool's dtype (fp8 included). The torch
path does this as two index_put launches, plus two casts for an fp8 pool; here one program per
token (grid (T, cdiv(KVH * D, BLOCK))) copies both rows, converting in registers.

Shapes: k, v [T, KVH, D] (the projection's output; each token's KVH * D values contiguous);
k_buf, v_buf [S, KVH, D] contiguous; loc [T] int (slots; slot 0 is the padding dummy).
Rounding to fp8 on GPUs saturates at the format's largest finite value where torch's cast
overflows to NaN/inf; both round to nearest even otherwise. The Triton interpreter (3.9) rounds
to fp8 wrongly when the mantissa carries into the exponent (0.4997 -> 0.25), so under it the
launcher casts to fp8 with torch first and the kernel only copies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import check_same_device, interpreting, next_pow2


@triton.jit
def _kv_store_kernel(K, V, KBuf, VBuf, Loc, stride_k, stride_v, row_k, row_v, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    slot = tl.load(Loc + t).to(tl.int64)
    k = tl.load(K + t * stride_k + offs, mask=offs < row_k)
    tl.store(KBuf + slot * row_k + offs, k.to(KBuf.dtype.element_ty), mask=offs < row_k)
    v = tl.load(V + t * stride_v + offs, mask=offs < row_v)
    tl.store(VBuf + slot * row_v + offs, v.to(VBuf.dtype.element_ty), mask=offs < row_v)


def _rows(name: str, x: torch.Tensor, per_row: int) -> torch.Tensor:
    """x viewed as [T, per_row] without copying; its rows may be strided (slices of a fused qkv)."""
    x2 = x.reshape(x.shape[0], -1) if x.dim() > 2 else x
    if x2.dim() != 2 or x2.shape[1] != per_row or x2.stride(1) != 1:
        raise ValueError(f"{name} must be [T, {per_row}] with contiguous rows, got {tuple(x.shape)} {tuple(x.stride())}")
    return x2


def store_kv(k_buf: torch.Tensor, v_buf: torch.Tensor, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k_buf[loc] = k; v_buf[loc] = v (see the module docstring)."""
    for name, buf in (("k_buf", k_buf), ("v_buf", v_buf)):
        if not buf.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    row_k, row_v = k_buf[0].numel(), v_buf[0].numel()
    k2, v2 = _rows("k", k, row_k), _rows("v", v, row_v)
    if loc.dim() != 1 or loc.shape[0] != k2.shape[0] or v2.shape[0] != k2.shape[0]:
        raise ValueError(f"loc {tuple(loc.shape)} must list one slot per token of k {tuple(k.shape)} / v {tuple(v.shape)}")
    check_same_device(k_buf=k_buf, v_buf=v_buf, loc=loc, k=k, v=v)
    if loc.shape[0] == 0:
        return
    if interpreting() and k_buf.element_size() == 1:
        k2, v2 = k2.to(k_buf.dtype), v2.to(v_buf.dtype)
    block = min(next_pow2(max(row_k, row_v)), 2048)
    grid = (loc.shape[0], triton.cdiv(max(row_k, row_v), block))
    _kv_store_kernel[grid](k2, v2, k_buf, v_buf, loc, k2.stride(0), v2.stride(0), row_k, row_v, BLOCK=block,
                           num_warps=4)
