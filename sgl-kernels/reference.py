"""PyTorch oracles for the Triton kernels in this package: slow, loop-based, obviously correct.

Attention oracles compute in float64 and return float32, so a kernel's error is measured against
something more precise than itself. Elementwise oracles reproduce the torch layers' rounding steps
(they are the semantics the kernels must keep), computing in float32 like those layers.

Shapes use: T tokens, B requests, H query heads, KVH key/value heads, D head dim, S KV slots.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float, causal_offset: Optional[int],
            logit_cap: float = 0.0, window: int = -1) -> torch.Tensor:
    """q [Tq, H, D], k/v [L, KVH, D] (float64) -> [Tq, H, D]. With `causal_offset`, query i sits at
    position causal_offset + i and sees keys 0..causal_offset + i, of them only the last `window` + 1
    when window >= 0. `logit_cap` > 0 soft-caps the scaled scores: cap * tanh(s / cap). One KV head
    at a time keeps the score matrix small enough for 8K x 8K checks on a GPU."""
    kv_heads = k.shape[1]
    group = q.shape[1] // kv_heads
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype, device=q.device)
    visible = None
    if causal_offset is not None:
        q_pos = torch.arange(q.shape[0], device=q.device)[:, None] + causal_offset
        k_pos = torch.arange(k.shape[0], device=q.device)[None, :]
        visible = (k_pos <= q_pos) & ((q_pos - k_pos <= window) if window >= 0 else True)
    for j in range(kv_heads):
        heads = slice(j * group, (j + 1) * group)
        scores = torch.einsum("qhd,kd->hqk", q[:, heads], k[:, j]) * sm_scale
        if logit_cap > 0:
            scores = logit_cap * torch.tanh(scores / logit_cap)
        if visible is not None:
            scores = scores.masked_fill(~visible, float("-inf"))
        out[:, heads] = torch.einsum("hqk,kd->qhd", scores.softmax(dim=-1), v[:, j])
    return out


def _gather(buf: torch.Tensor, req_to_token: torch.Tensor, row: int, length: int) -> torch.Tensor:
    """Rows of the request's first `length` tokens, float64 (gathered before the upcast)."""
    return buf[req_to_token[row, :length].long()].double()


def decode_attention_ref(q, k_buf, v_buf, req_to_token, req_pool_indices, seq_lens, sm_scale: float,
                         logit_cap: float = 0.0, window: int = -1) -> torch.Tensor:
    """q [B, H, D]; k_buf/v_buf [S, KVH, D]; request b attends to the KV slots
    req_to_token[req_pool_indices[b], :seq_lens[b]] (its query sits at position seq_len - 1; `window`
    and `logit_cap` as in `_attend`). Returns float32 [B, H, Dv], computed in float64 on q's device."""
    out = torch.zeros(q.shape[0], q.shape[1], v_buf.shape[2], dtype=torch.float64, device=q.device)
    for b, (row, length) in enumerate(zip(req_pool_indices.tolist(), seq_lens.tolist())):
        if length == 0:
            continue
        k, v = _gather(k_buf, req_to_token, row, length), _gather(v_buf, req_to_token, row, length)
        out[b] = _attend(q[b : b + 1].double(), k, v, sm_scale, length - 1, logit_cap, window)[0]
    return out.float()


def extend_attention_ref(q, k_ext, v_ext, k_buf, v_buf, req_to_token, req_pool_indices, prefix_lens, extend_lens,
                         sm_scale: float, logit_cap: float = 0.0, window: int = -1) -> torch.Tensor:
    """q/k_ext/v_ext [T, H|KVH, D]: the new tokens of B requests laid out back to back. Request b's
    new tokens see its cached prefix (req_to_token[row, :prefix_lens[b]] in k_buf/v_buf) and, causally,
    the new tokens up to themselves (taken from k_ext/v_ext). Returns float32 [T, H, Dv]."""
    out = torch.zeros(q.shape[0], q.shape[1], v_buf.shape[2], dtype=torch.float64, device=q.device)
    start = 0
    for row, pre, ext in zip(req_pool_indices.tolist(), prefix_lens.tolist(), extend_lens.tolist()):
        new = slice(start, start + ext)
        keys = torch.cat([_gather(k_buf, req_to_token, row, pre), k_ext[new].double()])
        values = torch.cat([_gather(v_buf, req_to_token, row, pre), v_ext[new].double()])
        out[new] = _attend(q[new].double(), keys, values, sm_scale, pre, logit_cap, window)
        start += ext
    return out.float()


def kv_store_ref(k_buf: torch.Tensor, v_buf: torch.Tensor, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k_buf[loc[i]] = k[i] (cast to the buffer dtype), same for v. k/v [T, KVH, D]."""
    k_buf[loc] = k.to(k_buf.dtype)
    v_buf[loc] = v.to(v_buf.dtype)


def rmsnorm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float,
                residual: Optional[torch.Tensor] = None):
    """HF Llama RMSNorm. Without residual: norm(x). With it: s = x + residual (rounded to x's dtype)
    and (norm(s), s). norm(s) = weight * (s32 * rsqrt(mean(s32^2) + eps)).to(s.dtype)."""
    summed = x if residual is None else x + residual
    s32 = summed.float()
    normed = (s32 * torch.rsqrt(s32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    out = weight * normed
    return out if residual is None else (out, summed)


def rope_ref(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, inv_freq: torch.Tensor, head_size: int,
             is_neox: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate the first 2*len(inv_freq) channels of every head of q [T, H*head_size] and
    k [T, KVH*head_size]; angles position * inv_freq in float64. Neox style rotates the halves
    (x1, x2) = (x[:r/2], x[r/2:r]); GPT-J style the pairs (x[2i], x[2i+1])."""
    angles = positions.cpu().double()[:, None] * inv_freq.cpu().double()[None, :]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    return _rotate_ref(q, cos, sin, head_size, is_neox), _rotate_ref(k, cos, sin, head_size, is_neox)


def _rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int, is_neox: bool) -> torch.Tensor:
    heads = x.cpu().double().reshape(x.shape[0], -1, head_size)
    rotary_dim = 2 * cos.shape[-1]
    rot, rest = heads[..., :rotary_dim], heads[..., rotary_dim:]
    if is_neox:
        x1, x2 = rot[..., : rotary_dim // 2], rot[..., rotary_dim // 2 :]
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, rest), dim=-1).reshape(x.shape).to(x.dtype).to(x.device)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """[..., 2d] -> silu(x[..., :d]) * x[..., d:], each op rounded to x's dtype like the torch layer."""
    d = x.shape[-1] // 2
    gate, up = x[..., :d], x[..., d:]
    return torch.nn.functional.silu(gate.float()).to(x.dtype) * up


def apply_token_bitmask_rows_ref(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A masked copy of ``logits``: ``out[rows[i], t] = -inf`` where bit ``t % 32`` of word
    ``t // 32`` of ``bitmask[i]`` is clear (ids past the mask's words are blocked)."""
    out = logits.clone()
    words = bitmask.shape[1]
    for i, row in enumerate(rows.tolist()):
        for t in range(logits.shape[1]):
            word = t // 32
            allowed = word < words and (int(bitmask[i, word]) >> (t % 32)) & 1
            if not allowed:
                out[row, t] = float("-inf")
    return out


def random_req_to_token(seq_lens: Sequence[int], rows: int, max_ctx: int, num_slots: int,
                        generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, list]:
    """A req_to_token table whose requests own disjoint, randomly scattered KV slots (1..num_slots;
    slot 0 is the padding dummy). Returns (table [rows, max_ctx] int32, the row of each request)."""
    need = sum(seq_lens)
    if need > num_slots or len(seq_lens) > rows:
        raise ValueError(f"need {need} slots and {len(seq_lens)} rows, have {num_slots} and {rows}")
    slots = torch.randperm(num_slots, generator=generator)[:need] + 1
    req_rows = torch.randperm(rows, generator=generator)[: len(seq_lens)].tolist()
    table = torch.zeros(rows, max_ctx, dtype=torch.int32)
    start = 0
    for row, length in zip(req_rows, seq_lens):
        table[row, :length] = slots[start : start + length].int()
        start += length
    return table, req_rows


def fused_moe_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """Sparse MoE of SwiGLU experts: x [T, H]; w13 [E, 2I, H] (gate rows, then up rows); w2 [E, H, I];
    topk_weights [T, k], topk_ids [T, k]. out[t] = sum_j topk_weights[t, j] * w2[e] @ (silu(g) * u)
    with e = topk_ids[t, j] and g, u = split(w13[e] @ x[t]). One expert at a time over the tokens
    routed to it (index_select, then index_add into a float32 sum); returns x's dtype."""
    top_k = topk_ids.shape[1]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    flat_ids, flat_weights = topk_ids.reshape(-1), topk_weights.reshape(-1).float()
    for expert in flat_ids.unique().tolist():
        slots = (flat_ids == expert).nonzero().squeeze(1)
        tokens = slots // top_k
        gate, up = (x.index_select(0, tokens) @ w13[expert].t()).chunk(2, dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ w2[expert].t()
        out.index_add_(0, tokens, y.float() * flat_weights[slots, None])
    return out.to(x.dtype)
