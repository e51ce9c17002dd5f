"""Token-level KV memory: a request-slot table and per-layer K/V buffers.

`ReqToTokenPool` maps a request slot (row) to the KV slot of each of its tokens.
`TokenToKVPool` holds K and V for every layer, one row per KV slot; slot 0 is a dummy that padded
tokens write to, so slots 1..size are allocatable. Pages are one token (page size 1).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from sgl.runtime.executor.host_to_device import to_device
from sgl.runtime.mem.allocator import SlotAllocator


class ReqToTokenPool:
    """[size, max_context_len] int32 table: row r holds the KV slots of the request in slot r.

    Every change to the table goes through `write` or `write_cells`. Under tensor parallelism rank
    0's pool keeps a `journal` of them, which rides to the other ranks with the next forward plan
    (executor/forward_plan.py), so their tables stay identical without their own scheduler."""

    def __init__(self, size: int, max_context_len: int, device: str):
        self.size = size
        self.max_context_len = max_context_len
        self.device = device
        self.req_to_token = torch.zeros((size, max_context_len), dtype=torch.int32, device=device)
        self.free_slots: List[int] = list(range(size))
        self.journal: Optional[list] = None  # a list while writes are recorded

    def available_size(self) -> int:
        return len(self.free_slots)

    def alloc(self, need: int) -> Optional[List[int]]:
        if need > len(self.free_slots):
            return None
        taken, self.free_slots = self.free_slots[:need], self.free_slots[need:]
        return taken

    def free(self, index: int) -> None:
        if index in self.free_slots:
            raise RuntimeError(f"request slot {index} freed twice")
        self.free_slots.append(index)

    def write(self, row: int, start: int, slots: torch.Tensor) -> None:
        """Columns start.. of `row` = `slots`."""
        self.req_to_token[row, start : start + len(slots)] = slots.to(torch.int32)
        if self.journal is not None:
            self.journal.append((row, start, slots.clone()))

    def write_cells(self, rows: List[int], cols: List[int], slots: torch.Tensor) -> None:
        """Cell (rows[i], cols[i]) = slots[i], for every i."""
        index = (to_device(rows, torch.int64, self.device), to_device(cols, torch.int64, self.device))
        self.req_to_token[index] = slots.to(torch.int32)
        if self.journal is not None:
            self.journal.append((list(rows), list(cols), slots.clone()))

    def take_journal(self) -> list:
        """The writes recorded since the last call."""
        writes, self.journal = self.journal, []
        return writes

    def clear(self) -> None:
        self.free_slots = list(range(self.size))


def _storage_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp8 tensors do not support index_put on every build; store their bytes as uint8.
    if dtype in (getattr(torch, "float8_e5m2", None), getattr(torch, "float8_e4m3fn", None)):
        return torch.uint8
    return dtype


class TokenToKVPool:
    """Per-layer K/V buffers of shape [size + 1, head_num, head_dim]; slot 0 is the padding dummy."""

    def __init__(self, size: int, dtype: torch.dtype, head_num: int, head_dim: int, layer_num: int, device: str):
        self.size = size
        self.dtype = dtype
        self.store_dtype = _storage_dtype(dtype)
        self.head_num = head_num
        self.head_dim = head_dim
        self.layer_num = layer_num
        self.device = device
        shape = (size + 1, head_num, head_dim)
        self.k_buffer = [self._buffer(shape) for _ in range(layer_num)]
        self.v_buffer = [self._buffer(shape) for _ in range(layer_num)]
        self.allocator = SlotAllocator(size, device)

    def _buffer(self, shape) -> torch.Tensor:
        """One layer's K or V buffer (an offloaded pool puts it in host memory)."""
        return torch.zeros(shape, dtype=self.store_dtype, device=self.device)

    # -- allocation (delegated; the pool is what the scheduler holds) ---------------------------
    def available_size(self) -> int:
        return self.allocator.available_size()

    def alloc(self, need: int) -> Optional[torch.Tensor]:
        return self.allocator.alloc(need)

    def free(self, slots: torch.Tensor) -> None:
        self.allocator.free(slots)

    def clear(self) -> None:
        self.allocator.clear()

    def cell_size_bytes(self) -> int:
        return self.head_num * self.head_dim * self.layer_num * 2 * self.dtype.itemsize

    # -- data -------------------------------------------------------------------------------
    def _view(self, buf: torch.Tensor) -> torch.Tensor:
        return buf.view(self.dtype) if self.store_dtype != self.dtype else buf

    def get_key_buffer(self, layer_id: int) -> torch.Tensor:
        return self._view(self.k_buffer[layer_id])

    def get_value_buffer(self, layer_id: int) -> torch.Tensor:
        return self._view(self.v_buffer[layer_id])

    def get_kv_buffer(self, layer_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.get_key_buffer(layer_id), self.get_value_buffer(layer_id)

    def set_kv_buffer(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        k = k.reshape(-1, self.head_num, self.head_dim).to(self.dtype)
        v = v.reshape(-1, self.head_num, self.head_dim).to(self.dtype)
        if self.store_dtype != self.dtype:
            k, v = k.view(self.store_dtype), v.view(self.store_dtype)
        self.k_buffer[layer_id][loc] = k
        self.v_buffer[layer_id][loc] = v
