"""The torch-native backend's attention against a direct softmax(QK^T)V on CPU."""

from __future__ import annotations

import types

import pytest
import torch

from sgl.runtime.attention.torch_native import TorchNativeAttnBackend


def naive(q, k, v, prefix_len, scale):
    """q [Tq, H, D], k/v [L, KVH, D]; query i sits at position prefix_len + i."""
    tq, heads, _ = q.shape
    group = heads // k.shape[1]
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("thd,lhd->htl", q.double(), kk.double()) * scale
    pos = torch.arange(prefix_len, prefix_len + tq)[:, None]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > pos, float("-inf"))
    return torch.einsum("htl,lhd->thd", scores.softmax(-1), vv.double()).float()


@pytest.mark.parametrize("tq,prefix", [(1, 0), (7, 0), (16, 0), (5, 11), (1, 30)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (9, 3)])
def test_attend_matches_direct_softmax(tq, prefix, heads, kv_heads):
    gen = torch.Generator().manual_seed(tq * 100 + prefix + heads)
    q = torch.randn(tq, heads, 16, generator=gen)
    k = torch.randn(prefix + tq, kv_heads, 16, generator=gen)
    v = torch.randn(prefix + tq, kv_heads, 16, generator=gen)
    layer = types.SimpleNamespace(scaling=0.25)
    out = TorchNativeAttnBackend()._attend(q, k, v, layer, prefix)
    torch.testing.assert_close(out, naive(q, k, v, prefix, 0.25), rtol=1e-5, atol=1e-5)
