"""Shared helpers of the kernel tests: error measures and per-dtype tolerances."""

from __future__ import annotations

from typing import Optional

import torch

from sgl.kernels.utils import interpreting


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in `out` gives inf (never passes)."""
    out64, ref64 = out.double(), ref.double().to(out.device)
    if not torch.isfinite(out64).all():
        return float("inf")
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def attn_tol(dtype: torch.dtype, device: str) -> float:
    """Relative-norm tolerance of attention outputs: float32 dots run in true float32 (interpreter
    and GPU alike); 16-bit operands (P is rounded too) land between 1e-3 and 1e-2."""
    return 1e-5 if dtype == torch.float32 else 1.2e-2


def ulp_close(out: torch.Tensor, ref: torch.Tensor, ulps: Optional[int] = None) -> bool:
    """Elementwise |out - ref| <= ulps units in the last place of out's dtype at |ref|. The default
    budget is 2 on GPUs (round to nearest even, two roundings per op) and 4 under the interpreter,
    which rounds float -> bfloat16 by truncation, so chained roundings drift further."""
    if ulps is None:
        ulps = 4 if interpreting() else 2
    eps = torch.finfo(out.dtype).eps
    ref32 = ref.float().to(out.device)
    bound = ulps * eps * ref32.abs() + 1e-6
    return bool(((out.float() - ref32).abs() <= bound).all())
