"""Fused K/V store vs indexed assignment: strided inputs, dtype casts, untouched slots stay put."""

from __future__ import annotations

import pytest
import torch

from sgl.kernels import reference as R
from sgl.kernels.kv_store import store_kv


@pytest.mark.parametrize("src,dst", [
    (torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
    (torch.float32, torch.float8_e4m3fn), (torch.bfloat16, torch.float8_e5m2),
])
def test_store_matches_index_put(device, gen, src, dst):
    kv_heads, head_dim, slots = 3, 40, 50
    bufs = [torch.randn(slots + 1, kv_heads, head_dim, generator=gen).to(dst).to(device) for _ in range(2)]
    refs = [b.clone() for b in bufs]
    fused = torch.randn(7, 2 * kv_heads * head_dim + 5, generator=gen).to(src).to(device)
    k, v = fused[:, : kv_heads * head_dim], fused[:, kv_heads * head_dim : 2 * kv_heads * head_dim]  # strided rows
    loc = torch.randperm(slots, generator=gen)[:7].add(1).to(device)
    store_kv(bufs[0], bufs[1], loc, k, v)
    R.kv_store_ref(refs[0], refs[1], loc, k.reshape(7, kv_heads, head_dim), v.reshape(7, kv_heads, head_dim))
    for got, want in zip(bufs, refs):
        assert torch.equal(got.float(), want.float())  # written rows cast alike, other rows untouched


def test_store_rejects_mismatched_rows(device):
    buf = torch.zeros(10, 2, 8, device=device)
    with pytest.raises(ValueError, match="loc"):
        store_kv(buf, buf.clone(), torch.tensor([1, 2], device=device), torch.zeros(3, 16, device=device),
                 torch.zeros(3, 16, device=device))
    with pytest.raises(ValueError, match="k must be"):
        store_kv(buf, buf.clone(), torch.tensor([1], device=device), torch.zeros(1, 15, device=device),
                 torch.zeros(1, 16, device=device))
