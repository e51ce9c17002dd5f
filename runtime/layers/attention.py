"""RadixAttention: the attention layer models use. It owns no kernels: it reshapes and hands q/k/v
to the forward batch's attention backend, which reads the prefix KV through `req_to_token`.

Two per-layer variants every backend must honour or refuse at start-up (`check_backend_supports`),
never ignore: `logit_cap` > 0 soft-caps the scaled scores, s -> cap * tanh(s / cap) (Gemma 2), and
`sliding_window_size` >= 0 lets the query at position p see only keys at positions
p - sliding_window_size .. p (SGLang's convention: HF's `sliding_window` minus one).
"""

from __future__ import annotations

import torch
from torch import nn

from sgl.runtime.executor.forward_batch import ForwardBatch


class RadixAttention(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, scaling: float, num_kv_heads: int, layer_id: int,
                 logit_cap: float = 0.0, sliding_window_size: int = -1):
        super().__init__()
        if logit_cap < 0:
            raise ValueError(f"logit_cap must be >= 0 (0: off), got {logit_cap}")
        if sliding_window_size < -1:
            raise ValueError(f"sliding_window_size must be >= -1 (-1: off), got {sliding_window_size}")
        self.tp_q_head_num = num_heads
        self.tp_k_head_num = num_kv_heads
        self.tp_v_head_num = num_kv_heads
        self.head_dim = head_dim
        self.qk_head_dim = head_dim
        self.v_head_dim = head_dim
        self.scaling = scaling
        self.layer_id = layer_id
        self.logit_cap = float(logit_cap)
        self.sliding_window_size = int(sliding_window_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        return fb.attn_backend.forward(q, k, v, self, fb)

    def extra_repr(self) -> str:
        return (f"layer={self.layer_id}, heads={self.tp_q_head_num}, kv_heads={self.tp_k_head_num}, "
                f"logit_cap={self.logit_cap:g}, sliding_window_size={self.sliding_window_size}")


def check_backend_supports(backend: object, model: nn.Module, backend_name: str) -> None:
    """ValueError when a layer of `model` needs a variant (soft-capping, sliding window) that the
    attention backend does not implement (its `supports_logit_cap` / `supports_sliding_window`)."""
    for layer in model.modules():
        if not isinstance(layer, RadixAttention):
            continue
        if layer.logit_cap > 0 and not getattr(backend, "supports_logit_cap", False):
            raise ValueError(f"--attention-backend {backend_name} does not implement attention logit soft-capping "
                             f"(layer {layer.layer_id}, logit_cap {layer.logit_cap:g}); use torch_native or triton")
        if layer.sliding_window_size >= 0 and not getattr(backend, "supports_sliding_window", False):
            raise ValueError(f"--attention-backend {backend_name} does not implement sliding-window attention "
                             f"(layer {layer.layer_id}, window {layer.sliding_window_size + 1}); use torch_native or triton")
