"""Packed bitmasks against a plain bool reference, and batched application to logits."""

import random

import pytest
import torch

from sgl.runtime.constrained.base import BaseGrammar
from sgl.runtime.constrained.vocab_mask import (
    allocate_token_bitmask,
    apply_token_bitmask_,
    bitmask_from_allowed,
    bitmask_words,
    set_bits,
    unpack_bitmask,
)


@pytest.mark.parametrize("vocab", [1, 31, 32, 33, 1000, 49152, 50257])
def test_roundtrip_against_bool_reference(vocab):
    rng = random.Random(vocab)
    allowed = sorted(rng.sample(range(vocab), min(vocab, 40)))
    row = bitmask_from_allowed(allowed, vocab)
    assert row.shape == (bitmask_words(vocab),)
    ref = torch.zeros(vocab, dtype=torch.bool)
    ref[allowed] = True
    assert torch.equal(unpack_bitmask(row.unsqueeze(0), vocab)[0], ref)
    rebuilt = torch.zeros_like(row)
    set_bits(rebuilt, allowed)
    assert torch.equal(rebuilt, row)


def test_apply_is_batched_and_matches_reference():
    vocab, batch = 1000, 4
    rng = random.Random(0)
    mask = allocate_token_bitmask(batch, vocab, pin_memory=False)
    allowed_sets = [sorted(rng.sample(range(vocab), 17)) for _ in range(batch - 1)]
    for i, allowed in enumerate(allowed_sets):
        mask[i] = bitmask_from_allowed(allowed, vocab)
    logits = torch.randn(batch, vocab)
    expected = logits.clone()
    for i, allowed in enumerate(allowed_sets):
        blocked = torch.ones(vocab, dtype=torch.bool)
        blocked[allowed] = False
        expected[i][blocked] = float("-inf")
    BaseGrammar.apply_vocab_mask(logits, mask)
    assert torch.equal(logits, expected)  # last row: unconstrained (allocated as all-allowed)


def test_logits_wider_than_mask_are_blocked():
    mask = allocate_token_bitmask(1, 40, pin_memory=False)
    logits = torch.zeros(1, 70)
    apply_token_bitmask_(logits, mask)
    assert torch.isinf(logits[0, 64:]).all() and torch.isfinite(logits[0, :64]).all()


def test_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        apply_token_bitmask_(torch.zeros(2, 10), allocate_token_bitmask(1, 10, pin_memory=False))
    with pytest.raises(ValueError, match="int32"):
        unpack_bitmask(torch.zeros(1, 2, dtype=torch.int64), 10)
    with pytest.raises(ValueError, match="vocab_size"):
        bitmask_words(0)


def test_copy_row_checks_and_copies():
    from sgl.runtime.constrained.vocab_mask import copy_row_

    mask = allocate_token_bitmask(3, 96, pin_memory=False)
    row = bitmask_from_allowed([1, 40], 64)
    copy_row_(mask, 1, row)
    assert torch.nonzero(unpack_bitmask(mask, 96)[1]).flatten().tolist() == [1, 40]
    assert unpack_bitmask(mask, 96)[0].all() and unpack_bitmask(mask, 96)[2].all()
    strided = torch.full((3, 8), -1, dtype=torch.int32)[:, ::2]
    copy_row_(strided, 0, row[:2].clone())  # non-contiguous rows fall back to Tensor.copy_
    assert strided[0, :2].tolist() == row[:2].tolist() and strided[0, 2:].tolist() == [0, 0]
    for bad, idx, reason in [(mask, 3, "outside a batch"), (mask.long(), 0, "int32"),
                             (allocate_token_bitmask(1, 32, pin_memory=False), 0, "words per row")]:
        with pytest.raises(ValueError, match=reason):
            copy_row_(bad, idx, row)


def test_row_writer_puts_whole_rows_and_refuses_others():
    from sgl.runtime.constrained.vocab_mask import RowWriter

    mask = allocate_token_bitmask(3, 96, pin_memory=False)
    writer = RowWriter(mask)
    row = bitmask_from_allowed([1, 40, 95], 96)
    assert writer.put(2, row)
    assert torch.nonzero(unpack_bitmask(mask, 96)[2]).flatten().tolist() == [1, 40, 95]
    assert unpack_bitmask(mask, 96)[:2].all()
    # a row of another width, dtype or layout is left to the general fill
    assert not writer.put(0, row[:2].clone())
    assert not writer.put(0, row.long())
    assert not writer.put(0, torch.stack([row, row], 1)[:, 0])
    assert unpack_bitmask(mask, 96)[0].all()
    with pytest.raises(ValueError, match="outside a batch"):
        writer.put(3, row)
    with pytest.raises(ValueError, match="int32"):
        RowWriter(mask.long())


def test_device_row_cache_uploads_once_pads_and_starts_over_when_full():
    from sgl.runtime.constrained.vocab_mask import DeviceRowCache

    cache = DeviceRowCache(words=4, device="cpu", capacity=3)
    a, b = bitmask_from_allowed([1, 2], 64), bitmask_from_allowed([70, 100], 128)
    sa, sb = cache.slot(a), cache.slot(b)
    assert (sa, sb) == (0, 1) and cache.slot(a) == 0 and cache.uploads == 2
    assert unpack_bitmask(cache.table[0:1], 128).nonzero()[:, 1].tolist() == [1, 2]  # words past a row: blocked
    assert unpack_bitmask(cache.table[1:2], 128).nonzero()[:, 1].tolist() == [70, 100]
    cache.reserve(1)  # room for one more: nothing dropped
    assert cache.slot(a) == 0
    cache.reserve(2)  # would overflow: every slot dropped, rows uploaded again when seen
    assert cache.slot(b) == 0 and cache.uploads == 3
    cache.reserve(5)  # a step with more rows than the table: it grows
    assert cache.capacity == 5 and cache.slot(a) == 0
    with pytest.raises(ValueError, match="at most 4 words"):
        cache.slot(torch.zeros(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="int32"):
        cache.slot(torch.zeros(2, dtype=torch.int64))


def test_rows_masked_from_a_gathered_table():
    from sgl.runtime.constrained.vocab_mask import apply_token_bitmask_rows_

    table = torch.stack([bitmask_from_allowed([3], 96), bitmask_from_allowed([5, 90], 96)])
    logits = torch.zeros(3, 96)
    apply_token_bitmask_rows_(logits, table, torch.tensor([2, 0], dtype=torch.int32),
                              torch.tensor([1, 1], dtype=torch.int32))
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [5, 90]
    assert torch.isfinite(logits[1]).all()
    assert torch.isfinite(logits[2]).nonzero().flatten().tolist() == [5, 90]
