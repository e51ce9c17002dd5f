"""Test-only attention backends and forward-batch builders, so model tests need neither the KV
pool nor the runtime's backends."""

from __future__ import annotations

from typing import List, Optional

import torch

from sgl.runtime.attention.base import AttentionBackend
from sgl.runtime.executor.forward_batch import ForwardBatch, ForwardMode


def dense_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer) -> torch.Tensor:
    """Plain softmax attention of one sequence: q [n, H*D], k/v [n, KVH*D] -> [n, H*D]."""
    n, d = q.shape[0], layer.head_dim
    qh = q.reshape(n, -1, d).transpose(0, 1).float()
    kh = k.reshape(n, -1, d).transpose(0, 1).float()
    vh = v.reshape(n, -1, d).transpose(0, 1).float()
    group = qh.shape[0] // kh.shape[0]
    kh, vh = kh.repeat_interleave(group, dim=0), vh.repeat_interleave(group, dim=0)
    scores = (qh @ kh.transpose(1, 2)) * layer.scaling
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return (probs @ vh).transpose(0, 1).reshape(n, -1).to(q.dtype)


class DenseCausalBackend(AttentionBackend):
    """Attends each request's new tokens over themselves only (no prefix); stores nothing."""

    def forward(self, q, k, v, layer, fb, save_kv=True):
        outputs, start = [], 0
        for n in fb.extend_seq_lens_cpu:
            outputs.append(self.attend(q[start : start + n], k[start : start + n], v[start : start + n], layer, fb.positions[start : start + n]))
            start += n
        return torch.cat(outputs)

    def attend(self, q, k, v, layer, positions):
        return dense_causal_attention(q, k, v, layer)


def neox_rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Independent RoPE (rotate-half form, as HF writes it) on flat [n, heads*head_dim]."""
    angles = positions.double()[:, None] * inv_freq.double()[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, None, :]
    heads = x.reshape(x.shape[0], -1, head_dim).double()
    half = head_dim // 2
    rotated_half = torch.cat([-heads[..., half:], heads[..., :half]], dim=-1)
    return (heads * cos + rotated_half * sin).reshape(x.shape).to(x.dtype)


class RotatingBackend(DenseCausalBackend):
    """A backend that applies RoPE itself (like HiP): the model must hand it un-rotated q/k."""

    applies_rope = True

    def __init__(self, inv_freq: torch.Tensor):
        self.inv_freq = inv_freq

    def attend(self, q, k, v, layer, positions):
        q = neox_rotate(q, positions, self.inv_freq, layer.head_dim)
        k = neox_rotate(k, positions, self.inv_freq, layer.head_dim)
        return dense_causal_attention(q, k, v, layer)


def make_forward_batch(seqs: List[List[int]], backend: Optional[AttentionBackend] = None, device="cpu") -> ForwardBatch:
    """An extend batch of fresh requests (no cached prefix)."""
    lens = [len(s) for s in seqs]
    input_ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long, device=device)
    positions = torch.cat([torch.arange(n, device=device) for n in lens])
    seq_lens = torch.tensor(lens, device=device)
    return ForwardBatch(
        forward_mode=ForwardMode.EXTEND, batch_size=len(seqs), input_ids=input_ids, positions=positions,
        req_pool_indices=torch.arange(len(seqs), device=device), seq_lens=seq_lens,
        out_cache_loc=torch.zeros(len(input_ids), dtype=torch.long, device=device),
        req_to_token_pool=None, token_to_kv_pool=None, attn_backend=backend or DenseCausalBackend(),
        extend_seq_lens=seq_lens, extend_prefix_lens=torch.zeros(len(seqs), dtype=torch.long, device=device),
        extend_start_loc=torch.cumsum(seq_lens, 0) - seq_lens, seq_lens_cpu=lens, extend_seq_lens_cpu=lens,
        extend_prefix_lens_cpu=[0] * len(seqs),
    )


def run_logits(model, seqs: List[List[int]], backend: Optional[AttentionBackend] = None) -> torch.Tensor:
    """Logits of every token of every sequence, [total_tokens, vocab], on the model's device."""
    fb = make_forward_batch(seqs, backend, next(model.parameters()).device)
    with torch.inference_mode():
        hidden = model.forward(fb.input_ids, fb.positions, fb)
        return model.compute_logits(hidden)


class CachedSequence:
    """One sequence run through a real KV pool and attention backend (the torch-native one by
    default), step by step: `extend` new tokens over the cached ones (a prefill with a cached prefix
    when some are cached) or `decode` one token; each returns the logits of the new tokens."""

    def __init__(self, model, num_kv_heads: int, head_dim: int, num_layers: int, backend=None,
                 capacity: int = 256, dtype: torch.dtype = torch.float32):
        from sgl.runtime.attention.torch_native import TorchNativeAttnBackend
        from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool

        self.model, self.backend = model, backend or TorchNativeAttnBackend()
        self.r2t = ReqToTokenPool(2, capacity, "cpu")
        self.kv = TokenToKVPool(capacity, dtype, num_kv_heads, head_dim, num_layers, "cpu")
        self.length = 0

    def extend(self, tokens: List[int]) -> torch.Tensor:
        return self._step(tokens, ForwardMode.EXTEND)

    def decode(self, token: int) -> torch.Tensor:
        return self._step([token], ForwardMode.DECODE)

    def _step(self, tokens: List[int], mode: ForwardMode) -> torch.Tensor:
        pre, n = self.length, len(tokens)
        slots = torch.arange(pre + 1, pre + n + 1)  # slot 0 is the pool's dummy
        self.r2t.write(0, pre, slots)
        fb = ForwardBatch(
            forward_mode=mode, batch_size=1, input_ids=torch.tensor(tokens), positions=torch.arange(pre, pre + n),
            req_pool_indices=torch.tensor([0]), seq_lens=torch.tensor([pre + n]), out_cache_loc=slots,
            req_to_token_pool=self.r2t, token_to_kv_pool=self.kv, attn_backend=self.backend,
            seq_lens_cpu=[pre + n], req_pool_indices_cpu=[0])
        if mode == ForwardMode.EXTEND:
            fb.extend_seq_lens, fb.extend_prefix_lens = torch.tensor([n]), torch.tensor([pre])
            fb.extend_start_loc, fb.extend_seq_lens_cpu, fb.extend_prefix_lens_cpu = torch.tensor([0]), [n], [pre]
        self.length += n
        with torch.inference_mode():
            self.backend.init_forward_metadata(fb)
            return self.model.compute_logits(self.model.forward(fb.input_ids, fb.positions, fb))
