"""Packed vocab bitmasks applied to chosen logits rows: the kernel vs the loop oracle, and the
torch path the scheduler takes without CUDA."""

from __future__ import annotations

import pytest
import torch

from sgl.kernels import reference as R
from sgl.kernels.token_bitmask import apply_token_bitmask_rows_
from sgl.runtime.constrained.vocab_mask import apply_token_bitmask_rows_ as dispatch


def _case(gen, bs: int, vocab: int, words: int, rows):
    logits = torch.randn(bs, vocab, generator=gen)
    bits = torch.randint(-(1 << 31), 1 << 31, (len(rows), words), generator=gen, dtype=torch.int64)
    bits[0, 0] = -1  # a word with every bit set (the sign bit too)
    if len(rows) > 1:
        bits[1] = 0  # a row that allows nothing
    return logits, bits.to(torch.int32), torch.tensor(rows, dtype=torch.int32)


@pytest.mark.parametrize("bs, vocab, words, rows", [
    (4, 100, 4, [2, 0]),        # vocab not a multiple of 32, rows out of order
    (3, 5000, 157, [1]),        # more than one 4096-wide block
    (2, 70, 2, [0, 1]),         # the mask covers 64 ids: ids 64.. are blocked
])
def test_kernel_matches_oracle(device, gen, bs, vocab, words, rows):
    logits, bits, idx = _case(gen, bs, vocab, words, rows)
    want = R.apply_token_bitmask_rows_ref(logits, bits, idx)
    got = logits.to(device)
    apply_token_bitmask_rows_(got, bits.to(device), idx.to(device))
    assert torch.equal(got.cpu(), want)


def test_kernel_gathers_rows_from_a_table(device, gen):
    """mask_rows: row rows[i] of the logits takes table row mask_rows[i] (the scheduler's device row cache)."""
    logits, bits, idx = _case(gen, 5, 5000, 157, [4, 0, 2, 1])
    slots = torch.tensor([1, 3, 1, 0], dtype=torch.int32)
    want = R.apply_token_bitmask_rows_ref(logits, bits[slots.long()], idx)
    got = logits.to(device)
    apply_token_bitmask_rows_(got, bits.to(device), idx.to(device), slots.to(device))
    assert torch.equal(got.cpu(), want)


def test_torch_path_matches_oracle(gen):
    logits, bits, idx = _case(gen, 5, 300, 10, [4, 1, 3])
    want = R.apply_token_bitmask_rows_ref(logits, bits, idx)
    dispatch(logits, bits, idx)  # CPU tensors: the gather / mask / scatter path
    assert torch.equal(logits, want)


def test_rejects_mismatched_rows(device):
    with pytest.raises(ValueError, match="one row per entry"):
        apply_token_bitmask_rows_(torch.zeros(2, 64, device=device), torch.zeros(1, 2, dtype=torch.int32, device=device),
                                  torch.tensor([0, 1], dtype=torch.int32, device=device))
