"""HiP decode kernels reading an offloaded pool through a GPU cache (sgl.kernels.hip_offload).

A cache holds copies of some token rows (bank + page table). The kernels must (1) give the same result
as reading the pool directly, (2) take cached tokens from the bank and only the others from the pool
(checked by poisoning the pool rows of cached tokens), (3) mark every token they read in `touch`.
The PyTorch references implement the same read path (`read_rows`) and are checked the same way."""

from __future__ import annotations

import pytest
import torch

from sgl.kernels.hip_offload import TokenCache, fill_rows
from sgl.kernels.hip_reference import ROPE_NONE, ROPE_RELATIVE, ROPE_STREAMING, hip_bsa_ref, hip_prune_stage_ref

from test_hip_bsa import _make
from test_hip_prune import make_case


def _cache(k_buf, v_buf, cached_slots, with_v: bool, gen):
    """A cache of `cached_slots` rows placed at shuffled bank rows (plus free rows)."""
    n = len(cached_slots)
    size = n + 3
    page = torch.full((k_buf.shape[0],), -1, dtype=torch.int32, device=k_buf.device)
    rows = torch.randperm(size, generator=gen)[:n].to(k_buf.device)
    slots = torch.tensor(cached_slots, dtype=torch.long, device=k_buf.device)
    page[slots] = rows.int()
    bank_k = torch.zeros((size,) + tuple(k_buf.shape[1:]), dtype=k_buf.dtype, device=k_buf.device)
    bank_k[rows] = k_buf[slots]
    bank_v = None
    if with_v:
        bank_v = torch.zeros_like(bank_k)
        bank_v[rows] = v_buf[slots]
    touch = torch.zeros(k_buf.shape[0], dtype=torch.int8, device=k_buf.device)
    return TokenCache(page, touch, bank_k, bank_v), slots


def _poison(buf, slots):
    bad = buf.clone()
    bad[slots] = torch.full(bad[slots].shape, 100.0, device=buf.device).to(buf.dtype)
    return bad


@pytest.mark.parametrize("mode", [ROPE_NONE, ROPE_STREAMING, ROPE_RELATIVE])
@pytest.mark.parametrize("kv_heads", [2, 3])
def test_prune_row_kernel_reads_through_the_cache(device, gen, mode, kv_heads):
    from sgl.kernels.hip_prune import hip_prune_stage

    case = make_case(device, gen, mode=mode, heads=2 * kv_heads, kv_heads=kv_heads, decode=[90, 41, 130],
                     chunk=8, stride=1)
    plain = hip_prune_stage(*case.args())
    ref_plain = hip_prune_stage_ref(*case.args())
    used = torch.unique(case.table[case.row.long()].flatten()).tolist()
    cached_slots = used[::3]  # a third of the tokens cached
    cache, slots = _cache(case.k_buf, None, cached_slots, False, gen)
    case.k_buf = _poison(case.k_buf, slots)  # a cached token read from the pool would show
    out = hip_prune_stage(*case.args(), cache=cache)
    assert torch.equal(out == float("-inf"), plain == float("-inf"))
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    touched = cache.touch.nonzero().flatten()
    assert touched.numel() > 0
    # every touched token is one of the requests' tokens
    assert set(touched.tolist()) <= set(used)
    ref_cache = TokenCache(cache.page, torch.zeros_like(cache.touch), cache.bank_k)
    ref = hip_prune_stage_ref(*case.args(), cache=ref_cache)
    torch.testing.assert_close(ref, ref_plain, rtol=1e-5, atol=1e-5)
    # the reference reads the same tokens (it records what the bisection read, as the kernel does)
    assert torch.equal(ref_cache.touch.cpu(), cache.touch.cpu())


def test_prune_cache_is_decode_only(device, gen):
    from sgl.kernels.hip_prune import hip_prune_stage

    case = make_case(device, gen, mode=ROPE_NONE)  # extend blocks of 16 queries, stride 4
    cache, _ = _cache(case.k_buf, None, [1, 2], False, gen)
    with pytest.raises(ValueError, match="one-row"):
        hip_prune_stage(*case.args(), cache=cache)


@pytest.mark.parametrize("extend", [False, True])
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float8_e5m2])
def test_bsa_decode_reads_through_the_cache(device, gen, extend, kv_dtype):
    from sgl.kernels.hip_bsa import hip_bsa

    args = _make(gen, device, [(60, 1), (33, 1), (90, 1)], 1, heads=4, kv_heads=2, dim=32, kv_dtype=kv_dtype)
    plain = hip_bsa(**args, extend=extend)
    used = torch.unique(args["block_table"][args["blk_row"].long()].flatten()).tolist()
    cache, slots = _cache(args["k_buf"], args["v_buf"], used[1::2], True, gen)
    poisoned = dict(args, k_buf=_poison(args["k_buf"], slots), v_buf=_poison(args["v_buf"], slots))
    out = hip_bsa(**poisoned, extend=extend, cache=cache)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    assert cache.touch.sum() > 0
    ref_cache = TokenCache(cache.page, torch.zeros_like(cache.touch), cache.bank_k, cache.bank_v)
    ref = hip_bsa_ref(**poisoned, extend=extend, cache=ref_cache)
    torch.testing.assert_close(ref.float(), hip_bsa_ref(**args, extend=extend).float(), rtol=1e-5, atol=1e-5)
    # the kernel reads exactly the keys the block sees
    assert torch.equal(ref_cache.touch.cpu(), cache.touch.cpu())


def test_bsa_cache_needs_values_and_decode(device, gen):
    from sgl.kernels.hip_bsa import hip_bsa

    args = _make(gen, device, [(60, 1)], 1, heads=4, kv_heads=2, dim=32)
    keys_only, _ = _cache(args["k_buf"], None, [3], False, gen)
    with pytest.raises(ValueError, match="bank_v"):
        hip_bsa(**args, extend=False, cache=keys_only)
    args16 = _make(gen, device, [(60, 20)], 16, heads=4, kv_heads=2, dim=32)
    kv_cache, _ = _cache(args16["k_buf"], args16["v_buf"], [3], True, gen)
    with pytest.raises(ValueError, match="decode kernel only"):
        hip_bsa(**args16, extend=False, cache=kv_cache)


def test_fill_rows_copies_only_count_rows(device, gen):
    src = torch.randn(50, 2, 8, generator=gen).to(device)
    dst = torch.zeros(10, 2, 8, device=device)
    tokens = torch.tensor([7, 3, 40, 11, 2], dtype=torch.int64, device=device)
    rows = torch.tensor([9, 0, 4, 5, 6], dtype=torch.int64, device=device)
    fill_rows(src, dst, tokens, rows, torch.tensor([3], device=device))
    want = torch.zeros_like(dst)
    want[[9, 0, 4]] = src[[7, 3, 40]]
    assert torch.equal(dst, want)
    with pytest.raises(ValueError, match="rows differ"):
        fill_rows(src, torch.zeros(10, 3, 8, device=device), tokens, rows, torch.tensor([1], device=device))
