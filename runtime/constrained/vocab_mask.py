"""Packed vocabulary bitmasks: one int32 word per 32 token ids, bit set = token allowed.

Layout (the same as xgrammar's and outlines-core's): token ``t`` is bit ``t % 32`` of word
``t // 32``; a batch mask is ``[batch, ceil(vocab / 32)]`` int32. Packed masks are 32x smaller
than bool ``[batch, vocab]`` ones (6 KB per row at vocab 49K), so filling rows on the CPU and
copying the whole batch to the GPU once per step is cheap. A freshly allocated mask allows
everything, so rows of unconstrained requests need no work.
"""

import ctypes
from typing import Iterable, Optional, Union

import torch

__all__ = [
    "bitmask_words",
    "set_bits",
    "allocate_token_bitmask",
    "unpack_bitmask",
    "apply_token_bitmask_",
    "apply_token_bitmask_rows_",
    "bitmask_from_allowed",
    "copy_row_",
    "RowWriter",
    "DeviceRowCache",
]

_BYTE_TABLES = {}


def bitmask_words(vocab_size: int) -> int:
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return (vocab_size + 31) // 32


def set_bits(row: torch.Tensor, token_ids: Iterable[int]) -> None:
    """Set the bits of ``token_ids`` in a 1-D packed row (in place)."""
    for tid in token_ids:
        word, bit = divmod(int(tid), 32)
        # int32 bit 31 is the sign bit: build the word value in int64 and wrap it
        value = (int(row[word]) & 0xFFFFFFFF) | (1 << bit)
        row[word] = value - (1 << 32) if value >= 1 << 31 else value


def allocate_token_bitmask(batch_size: int, vocab_size: int, pin_memory: Optional[bool] = None) -> torch.Tensor:
    """CPU mask ``[batch, words]`` with every token allowed (-1 = all 32 bits set)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return torch.full((batch_size, bitmask_words(vocab_size)), -1, dtype=torch.int32, pin_memory=pin_memory)


def _byte_table(device: torch.device) -> torch.Tensor:
    """[256, 8] uint8: row b holds the 8 bits of byte b, lowest first (1 = allowed)."""
    key = str(device)
    if key not in _BYTE_TABLES:
        bits = [[(b >> i) & 1 for i in range(8)] for b in range(256)]
        _BYTE_TABLES[key] = torch.tensor(bits, dtype=torch.uint8, device=device)
    return _BYTE_TABLES[key]


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[batch, words]`` int32 -> ``[batch, vocab_size]`` bool (True = allowed).

    Each byte of the mask is looked up in a 256 x 8 table (one gather), about twice as fast on
    CPU as shifting every int32 word 32 times. Relies on little-endian int32 (x86, ARM, CUDA).
    """
    if bitmask.dtype != torch.int32 or bitmask.dim() != 2:
        raise ValueError(f"bitmask must be a 2-D int32 tensor, got {bitmask.dim()}-D {bitmask.dtype}")
    rows = bitmask.shape[0]
    as_bytes = bitmask.contiguous().view(torch.uint8).to(torch.int32)
    flat = torch.nn.functional.embedding(as_bytes, _byte_table(bitmask.device)).view(rows, -1).bool()
    if flat.shape[1] >= vocab_size:
        return flat[:, :vocab_size]
    pad = torch.zeros(rows, vocab_size - flat.shape[1], dtype=torch.bool, device=flat.device)
    return torch.cat([flat, pad], dim=1)  # ids past the mask are blocked


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set logits of blocked tokens to -inf, in place, for the whole batch in one op."""
    if logits.dim() != 2 or bitmask.shape[0] != logits.shape[0]:
        raise ValueError(
            f"logits [batch, vocab] and bitmask [batch, words] disagree: {tuple(logits.shape)} vs {tuple(bitmask.shape)}"
        )
    if bitmask.device != logits.device:
        bitmask = bitmask.to(logits.device, non_blocking=True)
    allowed = unpack_bitmask(bitmask, logits.shape[1])
    logits.masked_fill_(~allowed, float("-inf"))


def apply_token_bitmask_rows_(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor,
                              mask_rows: Optional[torch.Tensor] = None) -> None:
    """Row ``i`` of ``bitmask [n, words]`` (row ``mask_rows[i]`` when given) masks row ``rows[i]``
    of ``logits``, in place; other rows are untouched. On CUDA one Triton kernel
    (``sgl.kernels.token_bitmask``) does the whole step; elsewhere each constrained row is masked
    in place."""
    if bitmask.device != logits.device:
        bitmask = bitmask.to(logits.device, non_blocking=True)
    if rows.device != logits.device:
        rows = rows.to(logits.device, non_blocking=True)
    if mask_rows is not None and mask_rows.device != logits.device:
        mask_rows = mask_rows.to(logits.device, non_blocking=True)
    from sgl.kernels.utils import use_triton

    if use_triton(logits):
        from sgl.kernels.token_bitmask import apply_token_bitmask_rows_ as kernel

        kernel(logits, bitmask, rows, mask_rows)
        return
    if mask_rows is not None:
        bitmask = bitmask.index_select(0, mask_rows.long())
    if bitmask.shape[0] != rows.shape[0]:
        raise ValueError(f"bitmask has {bitmask.shape[0]} rows for {rows.shape[0]} row indices")
    blocked = ~unpack_bitmask(bitmask, logits.shape[1])
    for j, row in enumerate(rows.tolist()):
        logits[row].masked_fill_(blocked[j], float("-inf"))


def bitmask_from_allowed(allowed: Union[torch.Tensor, Iterable[int]], vocab_size: int) -> torch.Tensor:
    """1-D packed row from token ids (reference helper for tests and synthetic masks)."""
    flags = torch.zeros(bitmask_words(vocab_size) * 32, dtype=torch.bool)
    flags[torch.as_tensor(list(allowed) if not torch.is_tensor(allowed) else allowed, dtype=torch.long)] = True
    weights = (torch.ones(32, dtype=torch.int64) << torch.arange(32, dtype=torch.int64))
    words = (flags.view(-1, 32).to(torch.int64) * weights).sum(dim=1)
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def _check_cpu_mask(mask: torch.Tensor) -> None:
    if mask.dtype is not torch.int32 or mask.dim() != 2 or mask.device.type != "cpu":
        raise ValueError(f"vocab mask must be a 2-D int32 CPU tensor, got {mask.dim()}-D {mask.dtype} on {mask.device}")


class RowWriter:
    """Writes whole packed rows into a CPU batch mask with one memmove each (~0.3 µs): the mask
    is checked once, not per row. The scheduler's per-token path for rows a grammar caches."""

    def __init__(self, mask: torch.Tensor) -> None:
        _check_cpu_mask(mask)
        if mask.stride(1) != 1:
            raise ValueError("vocab mask rows must be contiguous")
        self.base = mask.data_ptr()
        self.row_bytes = mask.stride(0) * 4
        self.words = mask.shape[1]
        self.rows = mask.shape[0]

    def put(self, idx: int, row: torch.Tensor) -> bool:
        """``mask[idx] = row`` when ``row`` is a contiguous int32 row of the mask's width (True),
        else nothing (False: the caller falls back to the general fill)."""
        if row.numel() != self.words or not row.is_contiguous() or row.dtype is not torch.int32:
            return False
        if not 0 <= idx < self.rows:
            raise ValueError(f"mask row {idx} is outside a batch of {self.rows}")
        ctypes.memmove(self.base + idx * self.row_bytes, row.data_ptr(), self.words * 4)
        return True


def copy_row_(mask: torch.Tensor, idx: int, row: torch.Tensor) -> None:
    """``mask[idx, :len(row)] = row`` for a CPU int32 mask, as one memmove (~0.7 µs instead of
    ~3 µs for ``Tensor.copy_``: this runs once per constrained request per decode step).
    Words past ``row`` are cleared (token ids beyond the grammar's vocabulary stay blocked)."""
    n = row.numel()
    _check_cpu_mask(mask)
    if not 0 <= idx < mask.shape[0]:
        raise ValueError(f"mask row {idx} is outside a batch of {mask.shape[0]}")
    if mask.shape[1] < n:
        raise ValueError(f"vocab mask has {mask.shape[1]} words per row, the grammar needs {n}")
    if mask.stride(1) != 1 or not row.is_contiguous():
        mask[idx, :n].copy_(row)
    else:
        ctypes.memmove(mask.data_ptr() + idx * mask.stride(0) * 4, row.data_ptr(), n * 4)
    if mask.shape[1] > n:
        mask[idx, n:] = 0


class DeviceRowCache:
    """Packed rows kept on the device, each uploaded once and then named by its slot.

    A grammar state's cached host row (``BaseGrammar.plain_row``) is the same tensor every time the
    state is visited, so the scheduler masks such rows by slot: one small index copy and one kernel
    a step, instead of writing every constrained row into a host mask and copying the mask over.
    Keyed by the host tensor's identity (the cache holds a reference, so the key stays unique);
    when full, every slot is dropped at once (``reserve``) and rows are uploaded again as visited.
    """

    def __init__(self, words: int, device, capacity: int = 1024) -> None:
        if words <= 0 or capacity <= 0:
            raise ValueError(f"words and capacity must be positive, got {words} and {capacity}")
        self.words = words
        self.device = torch.device(device)
        self.table = torch.zeros((capacity, words), dtype=torch.int32, device=self.device)
        self._slots = {}
        self._held = []
        self.uploads = 0

    @property
    def capacity(self) -> int:
        return self.table.shape[0]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` new rows before a step assigns its slots (slots handed out in a
        step stay valid for that step's kernel: device work runs in stream order)."""
        if len(self._held) + n <= self.capacity:
            return
        if n > self.capacity:
            self.table = torch.zeros((n, self.words), dtype=torch.int32, device=self.device)
        self._slots, self._held = {}, []

    def slot(self, row: torch.Tensor) -> int:
        """The slot holding ``row`` (an int32 CPU row of at most ``words`` words; the words past
        it are zero, i.e. those token ids stay blocked), uploading it on first sight."""
        s = self._slots.get(id(row))
        if s is not None:
            return s
        n = row.numel()
        if row.dtype is not torch.int32 or row.dim() != 1 or n > self.words:
            raise ValueError(f"a mask row must be 1-D int32 with at most {self.words} words, got "
                             f"{row.dim()}-D {row.dtype} of {n}")
        s = len(self._held)
        if s >= self.capacity:
            raise ValueError("DeviceRowCache is full: call reserve() before assigning a step's slots")
        host = row.pin_memory() if self.device.type == "cuda" else row
        self.table[s, :n].copy_(host, non_blocking=True)
        if n < self.words:
            self.table[s, n:] = 0
        self._slots[id(row)] = s
        self._held.append(row)
        self.uploads += 1
        return s
