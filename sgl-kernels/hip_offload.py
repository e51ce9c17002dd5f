"""KV offloading for HiP: keys and values in host memory, read through a GPU cache of token rows.

The KV pool of an offloaded model lives in pinned host memory; the GPU reads it in place over the
bus (unified virtual addressing: a pinned host page has a device address). Per layer, two GPU caches
hold copies of the token rows the kernels read most: one of keys for the pruning stages (the *mask
cache*) and one of keys and values for the block-sparse attention (the *SA cache*).

`TokenCache` is what a kernel sees of one cache:

  page   [S] int32   pool slot -> cache row, -1 when the token is not cached ("the page table");
  touch  [S] int8    set to 1 for every token the kernel reads (hit or miss): the access record the
                     LRU update (`runtime/mem/hip_offload.py`) turns into insertions;
  bank_k [C, KVH, D] cached keys (the pool's storage dtype and row layout);
  bank_v [C, KVH, D] cached values (SA cache only), or None.

A read of token slot s: `c = page[s]`; the row comes from `bank[c]` when c >= 0, otherwise from the
host pool (`k_buf[s]`), and `touch[s] = 1` either way. The kernels (`hip_prune`'s one-row kernel,
`hip_bsa`'s decode kernel) and their PyTorch references (`hip_reference`) implement exactly this.

`fill_rows` copies the rows of the tokens chosen by the LRU update from host memory into their cache
rows; the number of rows is read on the device, so the launch has a fixed grid and is CUDA-graph safe.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from sgl.kernels.utils import interpreting, next_pow2


@dataclass
class TokenCache:
    page: torch.Tensor
    touch: torch.Tensor
    bank_k: torch.Tensor
    bank_v: Optional[torch.Tensor] = None

    def check(self, k_buf: torch.Tensor, v_buf: Optional[torch.Tensor] = None) -> None:
        """The cache must mirror the pool's row layout (same strides per token and per head)."""
        if self.page.dtype != torch.int32 or self.page.dim() != 1 or self.page.shape[0] < k_buf.shape[0]:
            raise ValueError(f"cache page must be an int32 [S >= {k_buf.shape[0]}] table, got "
                             f"{tuple(self.page.shape)} {self.page.dtype}")
        if self.touch.shape != self.page.shape:
            raise ValueError(f"cache touch {tuple(self.touch.shape)} must match page {tuple(self.page.shape)}")
        pairs = [("bank_k", self.bank_k, k_buf)]
        if v_buf is not None:
            if self.bank_v is None:
                raise ValueError("this read needs values: the cache has no bank_v")
            pairs.append(("bank_v", self.bank_v, v_buf))
        for name, bank, buf in pairs:
            if bank.shape[1:] != buf.shape[1:] or bank.stride()[1:] != buf.stride()[1:] or bank.stride(0) != buf.stride(0) \
                    or bank.element_size() != buf.element_size():
                raise ValueError(f"cache {name} {tuple(bank.shape)} must have the pool's row layout "
                                 f"{tuple(buf.shape[1:])}, strides {tuple(buf.stride())}")


def uva_view(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CUDA tensor over the pinned host memory of `t` (no copy: kernels read and write host memory
    over the bus). The view does not own the memory: keep `t` alive. On CPU `t` itself."""
    device = torch.device(device)
    if device.type != "cuda":
        return t
    if not t.is_pinned():
        raise ValueError("uva_view needs a pinned host tensor (tensor.pin_memory())")

    class _Interface:
        __cuda_array_interface__ = {
            "shape": tuple(t.shape), "strides": tuple(s * t.element_size() for s in t.stride()),
            "typestr": _TYPESTR[t.dtype], "data": (t.data_ptr(), False), "version": 2,
        }

    return torch.as_tensor(_Interface(), device=device)


_TYPESTR = {torch.uint8: "|u1", torch.int8: "|i1", torch.int16: "<i2", torch.int32: "<i4", torch.int64: "<i8",
            torch.float16: "<f2", torch.float32: "<f4"}


def pinned_empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeroed host memory for an offloaded pool: page-locked in place (cudaHostRegister) when the model
    runs on a GPU. (torch's pinned allocator rounds every block up to a power of two: a 1.01 GiB
    layer would take 2 GiB of locked memory.)"""
    # bfloat16 has no array-interface type code: its bytes are held as int16 and viewed back
    store = torch.int16 if dtype == torch.bfloat16 else dtype
    t = torch.zeros(shape, dtype=store)
    if torch.device(device).type == "cuda" and t.numel():
        cudart = torch.cuda.cudart()
        err = cudart.cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 0)
        if int(err) != 0:
            raise RuntimeError(f"cudaHostRegister of {t.numel() * t.element_size() / 2**30:.2f} GiB failed "
                               f"(error {int(err)}): not enough host memory can be page-locked")
        # unlock the pages when the pool goes (a later pool may get the same memory and lock it again)
        weakref.finalize(t, cudart.cudaHostUnregister, t.data_ptr())
    return t


def host_buffer(shape, dtype: torch.dtype, device: torch.device):
    """(owner, view): pinned host memory of `shape` in `dtype` and the tensor the kernels use
    (a CUDA view of it on GPUs; the host tensor itself on CPU)."""
    owner = pinned_empty(shape, dtype, device)
    view = uva_view(owner, device)
    if dtype == torch.bfloat16:
        view = view.view(torch.bfloat16)
    return owner, view


@triton.jit
def cache_lookup(Page, Touch, slots, mask, OFFLOAD: tl.constexpr):
    """The cache row of each pool slot (-1: not cached), every read slot marked in Touch; without
    OFFLOAD nothing is read and every row is -1."""
    if OFFLOAD:
        crow = tl.load(Page + slots, mask=mask, other=-1).to(tl.int64)
        tl.store(Touch + slots, tl.full(slots.shape, 1, tl.int8), mask=mask)
    else:
        crow = tl.full(slots.shape, -1, tl.int64)
    return crow


@triton.jit
def read_cached(Host, Bank, host_off, bank_off, hit, mask, OFFLOAD: tl.constexpr):
    """Values at Host + host_off, taken from Bank + bank_off where `hit` (a cached row) with OFFLOAD:
    float32, each masked-out or other-side lane costing no memory read. Without OFFLOAD the plain
    load in the pool's dtype."""
    if OFFLOAD:
        return tl.where(hit, tl.load(Bank + bank_off, mask=mask & hit, other=0.0).to(tl.float32),
                        tl.load(Host + host_off, mask=mask & (hit == 0), other=0.0).to(tl.float32))
    else:
        return tl.load(Host + host_off, mask=mask, other=0.0)


@triton.jit
def _fill_rows_kernel(Src, Dst, Tokens, Rows, Count, row_elems, ROW_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    if i >= tl.load(Count):
        return
    tok = tl.load(Tokens + i).to(tl.int64)
    row = tl.load(Rows + i).to(tl.int64)
    for off in range(0, ROW_BLOCK, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        m = offs < row_elems
        tl.store(Dst + row * row_elems + offs, tl.load(Src + tok * row_elems + offs, mask=m), mask=m)


def fill_rows(src: torch.Tensor, dst: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor,
              count: torch.Tensor) -> None:
    """dst[rows[i]] = src[tokens[i]] for i < count[0] (count read on the device).

    src, dst [*, KVH, D] contiguous with the same row size; tokens, rows [N] int; count [1] int.
    The grid is N programs whatever count is: CUDA-graph safe; programs past count exit at once."""
    row_elems = src[0].numel()
    if dst[0].numel() != row_elems or src.element_size() != dst.element_size():
        raise ValueError(f"fill_rows: rows differ, src {tuple(src.shape)} {src.dtype}, dst {tuple(dst.shape)} {dst.dtype}")
    if not (src.is_contiguous() and dst.is_contiguous()):
        raise ValueError("fill_rows needs contiguous src and dst")
    n = tokens.shape[0]
    if n == 0:
        return
    if src.dtype != dst.dtype:
        dst = dst.view(src.dtype)
    if not src.is_cuda and not interpreting():
        # the CPU path (tests, CPU serving): the same copy with torch
        k = int(count.reshape(-1)[0].item())
        if k > 0:
            dst[rows[:k].long()] = src[tokens[:k].long()]
        return
    block = min(1024, next_pow2(row_elems))
    _fill_rows_kernel[(n,)](src, dst, tokens, rows, count, row_elems, ROW_BLOCK=triton.cdiv(row_elems, block) * block,
                            BLOCK=block, num_warps=4)
