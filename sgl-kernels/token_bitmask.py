"""Apply packed vocabulary bitmasks to chosen rows of a logits tensor, in place.

``bitmask`` is ``[n, words]`` int32 (token ``t`` allowed when bit ``t % 32`` of word ``t // 32``
is set: the layout of ``runtime/constrained/vocab_mask.py``, xgrammar's and outlines-core's);
row ``i`` of it masks row ``rows[i]`` of ``logits [bs, vocab]``: blocked tokens become -inf.
Token ids past ``32 * words`` are blocked. Only constrained rows are touched, so one JSON request
in a batch of 64 costs one row's work, not the batch's.

Grid (n, cdiv(vocab, BLOCK)): each program reads BLOCK / 32 words and writes -inf where a bit is
clear. Shapes: logits with a contiguous last dimension (any float dtype), rows int32/int64 on the
logits' device.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _apply_bitmask_kernel(Logits, Mask, Rows, MaskRows, stride_l, stride_m, vocab, words, BLOCK: tl.constexpr,
                          GATHER: tl.constexpr):
    i = tl.program_id(0)
    row = tl.load(Rows + i).to(tl.int64)
    m = tl.load(MaskRows + i).to(tl.int64) if GATHER else i.to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    word = offs // 32
    bits = tl.load(Mask + m * stride_m + word, mask=(offs < vocab) & (word < words), other=0)
    blocked = ((bits >> (offs % 32)) & 1) == 0
    tl.store(Logits + row * stride_l + offs, float("-inf"), mask=(offs < vocab) & blocked)


def apply_token_bitmask_rows_(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor,
                              mask_rows: Optional[torch.Tensor] = None) -> None:
    """``logits[rows[i], t] = -inf`` wherever bit ``t`` of ``bitmask[i]`` is clear (module docstring).
    With ``mask_rows`` (same length as ``rows``), row ``rows[i]`` takes ``bitmask[mask_rows[i]]``
    instead: a table of rows kept on the device, gathered by index."""
    if logits.dim() != 2 or bitmask.dim() != 2 or rows.dim() != 1:
        raise ValueError(f"expected logits [bs, vocab], bitmask [n, words], rows [n]; got "
                         f"{tuple(logits.shape)}, {tuple(bitmask.shape)}, {tuple(rows.shape)}")
    if mask_rows is not None and mask_rows.shape != rows.shape:
        raise ValueError(f"mask_rows must match rows, got {tuple(mask_rows.shape)} for {tuple(rows.shape)}")
    if bitmask.dtype != torch.int32 or (mask_rows is None and bitmask.shape[0] != rows.shape[0]):
        raise ValueError(f"bitmask must be int32 with one row per entry of rows, got {bitmask.dtype} "
                         f"{tuple(bitmask.shape)} for {rows.shape[0]} rows")
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("logits and bitmask need a contiguous last dimension")
    n, vocab = rows.shape[0], logits.shape[1]
    if n and vocab:
        _apply_bitmask_kernel[(n, triton.cdiv(vocab, BLOCK))](
            logits, bitmask, rows, rows if mask_rows is None else mask_rows, logits.stride(0), bitmask.stride(0),
            vocab, bitmask.shape[1], BLOCK=BLOCK, GATHER=mask_rows is not None, num_warps=8)
