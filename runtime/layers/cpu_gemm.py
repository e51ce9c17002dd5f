"""Packed weights for matmuls on CPU (oneDNN).

`F.linear` on a CPU tensor lays the weight out for the vector units again on every call. At decode
sizes (a few to a few dozen rows) that is most of the time: on the 2-core AMD EPYC (AVX512-BF16)
with SmolLM2-135M's shapes and the weights streamed from memory, a bf16 [16, 576] x [576, 3072]
product takes 392 us through `F.linear` and 246 us with the weight packed once (8.2 -> 14.4 GB/s
of weights), the [16, 576] x [576, 49152] LM head 5.7 -> 3.4 ms, and float32 [16, 576] x
[576, 3072] 891 -> 399 us. bf16 results are the same bits on those shapes; float32 ones agree to
~1e-4 (another summation order).

`pack_model` gives every linear layer (and the LM head) a packed copy of its weight, which its
forward then uses for CPU inputs of the weight's dtype; the original weight stays (loading, GPU
paths and everything that reads `.weight` are unchanged), so packing costs one more copy of those
weights in memory, and is skipped when that would not fit comfortably. A model whose weights
change after packing must be packed again.
"""

from __future__ import annotations

import functools
import logging
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PACK_DTYPES = (torch.bfloat16, torch.float32)
# rows the packed layout is tuned for (decode batches); any row count runs with it
BATCH_HINT = 16


class PackableWeight:
    """Mixin of modules whose `weight` [out, in] may get a packed copy for CPU matmuls."""

    packed_weight: Optional[torch.Tensor] = None

    def matmul(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x @ weight.T (+ bias), through the packed copy when there is one for x."""
        return linear(x, self.weight, bias, self.packed_weight)


@functools.lru_cache(maxsize=None)
def packing_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
            and pack(torch.zeros(4, 4), check=False) is not None
    except (RuntimeError, AttributeError):
        return False


def pack(weight: torch.Tensor, check: bool = True) -> Optional[torch.Tensor]:
    """The packed copy of a 2-D CPU bf16/float32 weight, or None where packing does not apply."""
    if weight.dim() != 2 or weight.device.type != "cpu" or weight.dtype not in PACK_DTYPES:
        return None
    if check and not packing_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)
    except (RuntimeError, AttributeError):
        return None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           packed: Optional[torch.Tensor]) -> torch.Tensor:
    if packed is not None and x.device.type == "cpu" and x.dtype == weight.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, weight, bias)


def _targets(model: nn.Module) -> Iterator[Tuple[str, PackableWeight]]:
    """Linear layers, and the LM head (an embedding used as the LM head is packed only then)."""
    from sgl.runtime.layers.linear import LinearBase

    for name, module in model.named_modules():
        if isinstance(module, LinearBase):
            yield name, module
    head = getattr(model, "lm_head", None)
    if isinstance(head, PackableWeight) and not isinstance(head, LinearBase):
        yield "lm_head", head


def pack_model(model: nn.Module, max_bytes: Optional[int] = None) -> int:
    """Pack the weights of every linear layer and the LM head of a CPU model; returns the bytes
    packed (0 when packing is unavailable, the weights are not on the CPU, or the copy would need
    more than `max_bytes`, by default half the memory available now)."""
    targets = [(n, m) for n, m in _targets(model) if m.weight.device.type == "cpu" and m.weight.dtype in PACK_DTYPES]
    if not targets or not packing_available():
        return 0
    total = sum(m.weight.numel() * m.weight.element_size() for _, m in targets)
    if max_bytes is None:
        import psutil

        max_bytes = psutil.virtual_memory().available // 2
    if total > max_bytes:
        logger.info("CPU weight packing skipped: %.1f GB of weights, %.1f GB allowed", total / 1e9, max_bytes / 1e9)
        return 0
    for _, module in targets:
        module.packed_weight = pack(module.weight)
    return total


def unpack_model(model: nn.Module) -> None:
    """Drop the packed copies (the forward uses `weight` again)."""
    for _, module in _targets(model):
        module.packed_weight = None
