"""The torch-native backend's attention against a direct softmax(QK^T)V on CPU."""

from __future__ import annotations

import types

import pytest
import torch

from sgl.runtime.attention.torch_native import TorchNativeAttnBackend


def naive(q, k, v, prefix_len, scale, cap=0.0, window=-1):
    """q [Tq, H, D], k/v [L, KVH, D]; query i sits at position prefix_len + i; `cap` soft-caps the
    scores, `window` >= 0 hides keys more than `window` positions back."""
    tq, heads, _ = q.shape
    group = heads // k.shape[1]
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("thd,lhd->htl", q.double(), kk.double()) * scale
    if cap:
        scores = cap * torch.tanh(scores / cap)
    pos = torch.arange(prefix_len, prefix_len + tq)[:, None]
    key_pos = torch.arange(k.shape[0])[None, :]
    hidden = (key_pos > pos) | ((pos - key_pos > window) if window >= 0 else False)
    scores = scores.masked_fill(hidden, float("-inf"))
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


@pytest.mark.parametrize("tq,prefix", [(1, 0), (7, 0), (5, 11), (1, 30)])
@pytest.mark.parametrize("cap,window", [(0.0, 3), (2.0, -1), (1.5, 0), (1.5, 6)])
def test_attend_with_soft_cap_and_window(tq, prefix, cap, window):
    gen = torch.Generator().manual_seed(tq * 100 + prefix + window)
    q = torch.randn(tq, 6, 16, generator=gen) * 3  # large scores, so the cap binds
    k = torch.randn(prefix + tq, 2, 16, generator=gen)
    v = torch.randn(prefix + tq, 2, 16, generator=gen)
    layer = types.SimpleNamespace(scaling=0.25, logit_cap=cap, sliding_window_size=window)
    out = TorchNativeAttnBackend()._attend(q, k, v, layer, prefix)
    torch.testing.assert_close(out, naive(q, k, v, prefix, 0.25, cap, window), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cap,window", [(0.0, -1), (2.0, -1), (0.0, 4), (1.5, 2)])
def test_decode_batch_with_soft_cap_and_window(cap, window):
    """A decode batch of requests of different lengths (padded keys) against one naive call each."""
    from sgl.runtime.executor.forward_batch import ForwardBatch, ForwardMode
    from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool

    gen = torch.Generator().manual_seed(int(cap * 10) + window)
    lens = [9, 3, 14]
    r2t, kv = ReqToTokenPool(4, 32, "cpu"), TokenToKVPool(64, torch.float32, 2, 16, 1, "cpu")
    slots = torch.randperm(63, generator=gen)[: sum(lens)] + 1  # scattered over the pool
    k_all = torch.randn(sum(lens), 2, 16, generator=gen)
    v_all = torch.randn(sum(lens), 2, 16, generator=gen)
    kv.set_kv_buffer(0, slots, k_all, v_all)
    rows = list(torch.split(slots, lens))
    for i, row in enumerate(rows):
        r2t.write(i + 1, 0, row)
    q = torch.randn(len(lens), 6 * 16, generator=gen) * 3
    backend = TorchNativeAttnBackend()
    fb = ForwardBatch(forward_mode=ForwardMode.DECODE, batch_size=3, input_ids=torch.zeros(3, dtype=torch.long),
                      positions=torch.tensor(lens) - 1, req_pool_indices=torch.tensor([1, 2, 3]),
                      seq_lens=torch.tensor(lens), out_cache_loc=torch.stack([r[-1] for r in rows]),
                      req_to_token_pool=r2t, token_to_kv_pool=kv, attn_backend=backend)
    backend.init_forward_metadata(fb)
    layer = types.SimpleNamespace(scaling=0.25, logit_cap=cap, sliding_window_size=window, layer_id=0,
                                  tp_q_head_num=6, tp_k_head_num=2, head_dim=16)
    out = backend.forward_decode(q, None, None, layer, fb).view(3, 6, 16)
    ks, vs = torch.split(k_all, lens), torch.split(v_all, lens)
    for i, n in enumerate(lens):
        expected = naive(q[i].view(1, 6, 16), ks[i], vs[i], n - 1, 0.25, cap, window)[0]
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-5)
