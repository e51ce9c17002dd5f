"""RMSNorm with an optional fused residual add (the pre-norm transformer pattern)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from sgl.kernels.utils import use_triton
from sgl.runtime.layers.linear import make_param, default_weight_loader


class RMSNorm(nn.Module):
    #: whether the fused Triton kernel computes this norm on GPUs (it rounds in Llama's order)
    fused_kernel = True

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.weight = make_param(hidden_size, loader=default_weight_loader)

    def forward(
        self, x: torch.Tensor, residual: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Without `residual`: norm(x). With it: s = x + residual; returns (norm(s), s)."""
        if self.fused_kernel and use_triton(x):  # one fused pass on GPUs; this torch path stays the reference
            from sgl.kernels.rmsnorm import rmsnorm

            return rmsnorm(x, self.weight, self.variance_epsilon, residual)
        if residual is None:
            return self._norm(x)
        summed = x + residual
        return self._norm(summed), summed

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32 (bf16 variance is too coarse); the product order follows HF Llama
        # (F.rms_norm is the same x * rsqrt(mean(x^2) + eps) in one op instead of five)
        x32 = F.rms_norm(x.float(), (x.shape[-1],), eps=self.variance_epsilon)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.variance_epsilon}"


class GemmaRMSNorm(RMSNorm):
    """Gemma's RMSNorm: x * (1 + weight), the product taken in float32 before rounding (HF's order;
    the weights are stored zero-centred). Always the torch path: the fused kernel rounds in Llama's order."""

    fused_kernel = False

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        x32 = F.rms_norm(x.float(), (x.shape[-1],), eps=self.variance_epsilon)
        return (x32 * (1.0 + self.weight.float())).to(x.dtype)
