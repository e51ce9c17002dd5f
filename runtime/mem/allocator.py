"""Free-list allocator of KV slots (page size 1).

Slots are 1..size (slot 0 is the dummy). The free list is a tensor on the pool's device so the
scheduler can hand slices of it straight to the forward batch; `free_group_begin/end` batch many
frees into one concatenation.
"""

from __future__ import annotations

from typing import List, Optional

import torch


class SlotAllocator:
    def __init__(self, size: int, device: str):
        self.size = size
        self.device = device
        self._grouping = False
        self._group: List[torch.Tensor] = []
        self.clear()

    def clear(self) -> None:
        self.free_slots = torch.arange(1, self.size + 1, dtype=torch.int64, device=self.device)
        self._group = []

    def available_size(self) -> int:
        return int(self.free_slots.numel())

    def alloc(self, need: int) -> Optional[torch.Tensor]:
        if need > self.available_size():
            return None
        taken = self.free_slots[:need]
        self.free_slots = self.free_slots[need:]
        return taken

    def free(self, slots: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        slots = slots.to(device=self.device, dtype=torch.int64)
        if self._grouping:
            self._group.append(slots)
        else:
            self.free_slots = torch.cat((self.free_slots, slots))

    def free_group_begin(self) -> None:
        self._grouping = True
        self._group = []

    def free_group_end(self) -> None:
        self._grouping = False
        if self._group:
            self.free(torch.cat(self._group))
        self._group = []
