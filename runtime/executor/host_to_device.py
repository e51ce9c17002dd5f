"""Host lists to device tensors without a host sync.

`torch.tensor(values, device="cuda")` copies from pageable memory, which makes the host wait
until the stream is idle, i.e. until the forward running on the GPU finishes. The overlap
scheduler builds batch k+1 while batch k runs, so every host-to-device copy on that path goes
through a pinned staging tensor and a non-blocking copy (the caching host allocator keeps the
staging block alive until the copy is done).
"""

from __future__ import annotations

from typing import Sequence

import torch


def to_device(values: Sequence, dtype: torch.dtype, device) -> torch.Tensor:
    """A 1-D (or nested) tensor of `values` on `device`, enqueued without waiting on the device."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


def move(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor moved to `device` without waiting on the device."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
