"""Torch-native attention backend: the slow, obviously correct oracle (CPU and GPU).

For every request it gathers the request's K/V rows from the pool through `req_to_token` and runs
`scaled_dot_product_attention`. Extend queries sit at positions prefix_len..seq_len-1 and see every
key at or before their own position; decode queries see all keys. Layers with a logit soft-cap or a
sliding window take an explicit float32 scores path (`_masked_attention`) instead of SDPA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from sgl.runtime.attention.base import AttentionBackend

if TYPE_CHECKING:
    from sgl.runtime.executor.forward_batch import ForwardBatch
    from sgl.runtime.layers.attention import RadixAttention


def _is_variant(layer) -> bool:
    return getattr(layer, "logit_cap", 0.0) > 0 or getattr(layer, "sliding_window_size", -1) >= 0


def _visible(q_pos: torch.Tensor, k_pos: torch.Tensor, layer) -> torch.Tensor:
    """Which keys each query sees: causal, and within the layer's sliding window if it has one."""
    allowed = k_pos <= q_pos
    window = getattr(layer, "sliding_window_size", -1)
    return allowed & (q_pos - k_pos <= window) if window >= 0 else allowed


def _masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, layer) -> torch.Tensor:
    """softmax(cap(q k^T * scale) masked to `allowed`) v in float32: q [..., Tq, D], k/v [..., L, D],
    allowed broadcastable to [..., Tq, L]; the result in q's dtype."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * layer.scaling
    cap = getattr(layer, "logit_cap", 0.0)
    if cap > 0:  # before the mask: tanh would turn a masked -inf into -cap
        scores = torch.tanh(scores / cap) * cap
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return (probs @ v.float()).to(q.dtype)


class TorchNativeAttnBackend(AttentionBackend):
    supports_logit_cap = True
    supports_sliding_window = True

    def __init__(self, model_runner=None):
        self.model_runner = model_runner

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        # Host-side lengths are enough for the per-request loops below.
        if fb.seq_lens_cpu is None:
            fb.seq_lens_cpu = fb.seq_lens.tolist()
        if fb.req_pool_indices_cpu is None:
            fb.req_pool_indices_cpu = fb.req_pool_indices.tolist()
        if fb.forward_mode.is_decode():
            fb.attn_metadata = _DecodeMeta(fb)

    def _gather_kv(self, layer: "RadixAttention", fb: "ForwardBatch", i: int, seq_len: int):
        row = fb.req_pool_indices_cpu[i]
        slots = fb.req_to_token_pool.req_to_token[row, :seq_len].long()
        k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        return k_buf.index_select(0, slots), v_buf.index_select(0, slots)  # [L, KVH, D]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: "RadixAttention", prefix_len: int):
        # q [Tq, H, D]; k, v [L, KVH, D] -> [Tq, H, D]. The G query heads sharing a KV head become
        # G x Tq query rows of that head, so K/V are never repeated per query head.
        tq, heads, dim = q.shape
        kvh = k.shape[1]
        group = heads // kvh
        if _is_variant(layer):
            q_pos = torch.arange(prefix_len, prefix_len + tq, device=q.device)[:, None]
            allowed = _visible(q_pos, torch.arange(k.shape[0], device=q.device)[None, :], layer)
            qq = q.view(tq, kvh, group, dim).permute(1, 2, 0, 3)  # [KVH, G, Tq, D]
            out = _masked_attention(qq, k.transpose(0, 1).unsqueeze(1), v.transpose(0, 1).unsqueeze(1), allowed, layer)
            return out.permute(2, 0, 1, 3).reshape(tq, heads, dim)
        if tq > 1 and prefix_len == 0:
            # no cached prefix: SDPA's own causal mask (its fused kernel, 2-3x the masked path on
            # CPU); the G query heads of a KV head see that head's K/V expanded, not copied
            qq = q.view(tq, kvh, group, dim).permute(1, 2, 0, 3)  # [KVH, G, Tq, D]
            kk = k.to(q.dtype).transpose(0, 1).unsqueeze(1).expand(kvh, group, -1, dim)
            vv = v.to(q.dtype).transpose(0, 1).unsqueeze(1).expand(kvh, group, -1, dim)
            out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=layer.scaling)
            return out.permute(2, 0, 1, 3).reshape(tq, heads, dim)
        qq = q.view(tq, kvh, group, dim).permute(1, 2, 0, 3).reshape(kvh, group * tq, dim)
        kk = k.to(q.dtype).transpose(0, 1)
        vv = v.to(q.dtype).transpose(0, 1)
        mask = None
        if tq > 1:
            q_pos = torch.arange(prefix_len, prefix_len + tq, device=q.device)[:, None]
            mask = (torch.arange(k.shape[0], device=q.device)[None, :] <= q_pos).repeat(group, 1)
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=layer.scaling)
        return out.view(kvh, group, tq, dim).permute(2, 0, 1, 3).reshape(tq, heads, dim)

    def forward_extend(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        q = q.view(-1, layer.tp_q_head_num, layer.head_dim)
        out = torch.empty_like(q)
        start = 0
        for i in range(fb.batch_size):
            ext, pre = fb.extend_seq_lens_cpu[i], fb.extend_prefix_lens_cpu[i]
            kk, vv = self._gather_kv(layer, fb, i, pre + ext)
            out[start : start + ext] = self._attend(q[start : start + ext], kk, vv, layer, pre)
            start += ext
        return out.view(-1, layer.tp_q_head_num * layer.head_dim)

    def forward_decode(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        """All requests at once: keys padded to the longest sequence and masked; the query heads
        of one KV head are that head's query rows (no K/V repeated per query head)."""
        meta = fb.attn_metadata
        k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        kvh = layer.tp_k_head_num
        group = layer.tp_q_head_num // kvh
        # in the query's dtype: on CPU, SDPA's bf16 kernel accumulates in float32 and took 55-90% of
        # the float32 path's time with its casts (2-core EPYC, 1 x 136 to 64 x 300 keys); float16
        # goes through float32 on CPU
        dtype = torch.float32 if q.dtype == torch.float16 and q.device.type == "cpu" else q.dtype
        shape = (*meta.slots.shape, kvh, layer.head_dim)
        # index_select over the flat slots: several times faster than advanced indexing on CPU
        kk = k_buf.index_select(0, meta.flat_slots).view(shape).to(dtype).transpose(1, 2)  # [bs, KVH, L, D]
        vv = v_buf.index_select(0, meta.flat_slots).view(shape).to(dtype).transpose(1, 2)
        qq = q.view(-1, kvh, group, layer.head_dim).to(dtype)  # [bs, KVH, G, D]
        if _is_variant(layer):
            # the query sits at seq_len - 1: the causal test also drops the padding keys
            allowed = _visible(fb.seq_lens[:, None] - 1, meta.key_positions, layer)[:, None, None, :]
            out = _masked_attention(qq, kk, vv, allowed, layer)
            return out.to(q.dtype).reshape(-1, layer.tp_q_head_num * layer.head_dim)
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=meta.mask(dtype), scale=layer.scaling)
        return out.to(q.dtype).reshape(-1, layer.tp_q_head_num * layer.head_dim)


class _DecodeMeta:
    """Padded KV slot indices [bs, max_len] and which of them hold a key ([bs, max_len], None when
    none is padding)."""

    def __init__(self, fb: "ForwardBatch"):
        max_len = max(fb.seq_lens_cpu)
        rows = fb.req_to_token_pool.req_to_token[fb.req_pool_indices, :max_len].long()
        self.key_positions = torch.arange(max_len, device=rows.device)[None, :]  # [1, max_len]
        valid = self.key_positions < fb.seq_lens[:, None]
        self.slots = torch.where(valid, rows, torch.zeros_like(rows))  # padding reads the dummy slot 0
        self.flat_slots = self.slots.view(-1)
        # no mask when no request is padded
        self.valid = None if min(fb.seq_lens_cpu) == max_len else valid
        self._masks: dict = {}

    def mask(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The additive mask [bs, 1, 1, max_len] in `dtype`, built once per forward (SDPA converts a
        boolean mask again on every call), or None."""
        if self.valid is None:
            return None
        if dtype not in self._masks:
            zeros = torch.zeros(self.valid.shape, dtype=dtype, device=self.valid.device)
            self._masks[dtype] = zeros.masked_fill(~self.valid, float("-inf"))[:, None, None, :]
        return self._masks[dtype]
