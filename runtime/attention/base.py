"""The attention backend contract.

A backend is created once per model runner. For every batch the runner calls
`init_forward_metadata(fb)` once (host-side planning: index tensors, split sizes; this is also what
CUDA graphs capture around), then each attention layer calls `forward(q, k, v, layer, fb)`, which
stores the new K/V into the pool (unless `save_kv=False`) and dispatches to `forward_extend` or
`forward_decode`.

Shapes: q [num_tokens, num_heads * head_dim]; k, v [num_tokens, num_kv_heads * head_dim];
the output is [num_tokens, num_heads * head_dim].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sgl.runtime.forward_batch import ForwardBatch
    from sgl.runtime.layers.attention import RadixAttention


class AttentionBackend:
    #: True when the backend applies rotary embeddings itself (HiP extends the context and needs
    #: un-rotated keys); the layer then passes un-rotated q/k plus positions in the forward batch.
    applies_rope: bool = False

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        raise NotImplementedError

    def forward(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch", save_kv: bool = True) -> torch.Tensor:
        if save_kv and k is not None:
            fb.token_to_kv_pool.set_kv_buffer(layer.layer_id, fb.out_cache_loc, k, v)
        if fb.forward_mode.is_decode():
            return self.forward_decode(q, k, v, layer, fb)
        return self.forward_extend(q, k, v, layer, fb)

    def forward_extend(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        raise NotImplementedError

    def forward_decode(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        raise NotImplementedError
