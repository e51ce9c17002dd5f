"""The attention backend contract, and the registry that `--attention-backend` picks from.

A backend is created once per model runner. For every batch the runner calls
`init_forward_metadata(fb)` once (host-side planning: index tensors, split sizes; this is also what
CUDA graphs capture around), then each attention layer calls `forward(q, k, v, layer, fb)`, which
stores the new K/V into the pool (unless `save_kv=False`) and dispatches to `forward_extend` or
`forward_decode`. A backend whose decode can be captured in CUDA graphs also implements
`CudaGraphAttentionBackend`; the model runner decodes eagerly with any other.

Shapes: q [num_tokens, num_heads * head_dim]; k, v [num_tokens, num_kv_heads * head_dim];
the output is [num_tokens, num_heads * head_dim].

Backends subclass `AttentionBackend` (a Protocol with the shared `forward` dispatch) and are listed
in `ATTENTION_BACKENDS` under their flag value, imported only when picked.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Dict, Hashable, Optional, Protocol, Tuple, runtime_checkable

import torch

if TYPE_CHECKING:
    from sgl.runtime.executor.forward_batch import ForwardBatch
    from sgl.runtime.layers.attention import RadixAttention

logger = logging.getLogger(__name__)


class AttentionBackend(Protocol):
    #: True when the backend applies rotary embeddings itself (HiP extends the context and needs
    #: un-rotated keys); the layer then passes un-rotated q/k plus positions in the forward batch.
    applies_rope: bool = False
    #: Whether the backend implements the layer variants RadixAttention carries (attention logit
    #: soft-capping, sliding windows); the model runner refuses a model needing one it lacks.
    supports_logit_cap: bool = False
    supports_sliding_window: bool = False

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        """Plan one batch (called once per forward, before the layers)."""
        ...

    def forward_extend(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        """Attention of an extend (or mixed) batch's new tokens over their prefixes and themselves."""
        ...

    def forward_decode(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        """Attention of one new token per request over its whole KV."""
        ...

    def forward(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch", save_kv: bool = True) -> torch.Tensor:
        if save_kv and k is not None:
            fb.token_to_kv_pool.set_kv_buffer(layer.layer_id, fb.out_cache_loc, k, v)
        if fb.forward_mode.is_decode():
            return self.forward_decode(q, k, v, layer, fb)
        return self.forward_extend(q, k, v, layer, fb)


@runtime_checkable
class CudaGraphAttentionBackend(AttentionBackend, Protocol):
    """A backend whose decode forward CUDA graphs can capture (runtime/executor/cuda_graph_runner.py)."""

    def init_cuda_graph_state(self, max_bs: int, max_ctx: Optional[int] = None) -> None:
        """Allocate the static buffers of batches up to `max_bs` requests."""
        ...

    def init_forward_metadata_capture_cuda_graph(self, bs: int, req_pool_indices: torch.Tensor,
                                                 seq_lens: torch.Tensor, seq_lens_cpu=None,
                                                 variant: Hashable = None) -> None:
        """Plan the decode batch of `bs` rows about to be captured, over the runner's static tensors."""
        ...

    def init_forward_metadata_replay_cuda_graph(self, bs: int, req_pool_indices: torch.Tensor,
                                                seq_lens: torch.Tensor, seq_lens_cpu=None) -> None:
        """Refresh the plan before replaying the graph of batch size `bs`."""
        ...

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        """seq_len given to padded rows of a replayed batch."""
        ...

    def cuda_graph_variants(self) -> Tuple[Hashable, ...]:
        """Graphs captured per batch size, one per variant (HiP: one per refresh state); (None,) for one."""
        ...

    def cuda_graph_variant(self, fb: "ForwardBatch", padded_bs: int) -> Hashable:
        """Before a replay: plan the decode batch on the host and return the variant to replay."""
        ...


# --attention-backend value -> (module, class), imported when picked.
ATTENTION_BACKENDS: Dict[str, Tuple[str, str]] = {
    "torch_native": ("sgl.runtime.attention.torch_native", "TorchNativeAttnBackend"),
    "triton": ("sgl.runtime.attention.triton_backend", "TritonAttnBackend"),
    "hip": ("sgl.runtime.attention.hip.backend", "HipAttnBackend"),
}
# Where a backend cannot be imported (no triton), the one to use instead.
FALLBACK = {"triton": "torch_native"}


def create_attention_backend(name: str, model_runner) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"--attention-backend must be one of {sorted(ATTENTION_BACKENDS)}, got {name!r}")
    module, cls = ATTENTION_BACKENDS[name]
    try:
        backend_cls = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        if name not in FALLBACK:
            raise
        logger.warning("%s attention backend unavailable (%s); using %s", name, e, FALLBACK[name])
        return create_attention_backend(FALLBACK[name], model_runner)
    return backend_cls(model_runner)
