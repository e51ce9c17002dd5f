"""PyTorch references of the HiP attention kernels (hierarchically pruned sparse attention).

These define the semantics the Triton kernels (`hip_prune.py`, `hip_bsa.py`) must keep, and they are
the HiP backend's path on CPU. They are vectorized over query blocks and compute in float32.
docs/hip.md describes the algorithm; the notation follows it.

Common arguments
----------------
q            [Nq, H, D] queries of the forward, already multiplied by the softmax scale. Un-rotated
             when RoPE is applied here (`rope_mode` != ROPE_NONE, `extend=True`), rotated otherwise.
k_buf, v_buf [S, KVH, D] the KV pool (any float dtype, fp8 included); keys un-rotated when RoPE is
             applied here.
block_table  [R, T_max] KV slot of every token of a request (`req_to_token`).
A *query block* is up to `bq` consecutive queries of one request, described by four [NB] vectors:
blk_row      row of `block_table`;
blk_q_start  index of its first query in `q`;
blk_q_len    number of queries (1 for decode);
blk_pos      position of its first query; query i of the block sits at blk_pos + i.
cos, sin     [P, D/2] float32 RoPE table (neox style) of positions 0..P-1.

A candidate chunk of a pruning stage is `[left, min(left + chunk, p_min + 1))`, p_min the block's
first position: it never reads a key after the query block's first query. It is active when
`left <= p_min - sw_scan`; lists hold active chunks first, sorted by `left`, and pad with INVALID.
"""

from __future__ import annotations

import torch

#: padding of candidate and block-start lists; sorts after every real token index
INVALID = 1 << 30
ROPE_NONE, ROPE_STREAMING, ROPE_RELATIVE = 0, 1, 2


def rope_rows(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of x (neox halves) by the table rows `pos` (broadcast over x's middle dims)."""
    c, s = cos[pos], sin[pos]  # [..., D/2]
    while c.dim() < x.dim():
        c, s = c.unsqueeze(-2), s.unsqueeze(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def read_rows(buf: torch.Tensor, slots: torch.Tensor, valid: torch.Tensor, cache=None, bank=None) -> torch.Tensor:
    """buf[slots] ([..., KVH, D]); through an offload cache (sgl.kernels.hip_offload.TokenCache) when
    given: rows of cached tokens come from `bank`, and every `valid` read marks its token in
    cache.touch, as the kernels do."""
    rows = buf[slots]
    if cache is None:
        return rows
    cache.touch[slots[valid]] = 1
    crow = cache.page[slots].long()
    hit = (crow >= 0)[..., None, None]
    return torch.where(hit, bank[crow.clamp(min=0)], rows)


def _heads(q, k_buf):
    """(query heads, head dim, KV heads, GQA group)."""
    return q.shape[1], q.shape[2], k_buf.shape[1], q.shape[1] // k_buf.shape[1]


def _block_queries(q, blk_q_start, blk_q_len, bq: int):
    """[NB, bq, H, D] float32 queries of each block (zeros past its length) and the [NB, bq] validity."""
    offs = torch.arange(bq, device=q.device)
    valid = offs[None, :] < blk_q_len[:, None]
    idx = torch.where(valid, blk_q_start[:, None] + offs[None, :], torch.zeros_like(valid, dtype=torch.long))
    return q[idx.long()].float() * valid[..., None, None], valid


def hip_prune_stage_ref(q, k_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, left, n_active,
                        chunk_size: int, stride_q: int, sw_scan: int, rope_mode: int, cos, sin,
                        block_size_q: int, cache=None) -> torch.Tensor:
    """Score every candidate chunk of one pruning stage -> [NB, n] float32 (-inf where inactive).

    left      [NB, n] chunk starts (see the module docstring); n_active [NB] how many are active.
    The block's queries are averaged in groups of `stride_q` consecutive ones (each rotated first, in
    streaming mode, at min(position, n_active + sw_scan)). A chunk is searched by bisection: each step
    scores the middle key of both halves, max over the pooled rows and over all query heads (one path
    per chunk for the whole layer), and keeps the better half; the chunk's score is the best score met
    on the path. Key positions: streaming, the chunk's index in the list; relative, 0 for the left half
    and 1 for the right, the queries at sw_scan + 1; none, no rotation. `cache`: k_buf is an
    offloaded pool read through this cache (`read_rows`).
    """
    nb, n = left.shape
    heads, dim, kv_heads, group = _heads(q, k_buf)
    dev = q.device
    qb, valid = _block_queries(q, blk_q_start, blk_q_len, block_size_q)  # [NB, bq, H, D]
    qpos = blk_pos[:, None] + torch.arange(block_size_q, device=dev)[None, :]
    if rope_mode == ROPE_STREAMING:
        qb = rope_rows(qb, torch.minimum(qpos, n_active[:, None] + sw_scan).long(), cos, sin)
    rows = block_size_q // stride_q
    grouped = qb.view(nb, rows, stride_q, heads, dim)
    counts = valid.view(nb, rows, stride_q).sum(-1).clamp(min=1)
    pooled = grouped.sum(2) / counts[..., None, None]  # [NB, rows, H, D]
    row_ok = valid.view(nb, rows, stride_q).any(-1)  # [NB, rows]
    if rope_mode == ROPE_RELATIVE:
        pooled = rope_rows(pooled, torch.full((nb, rows), sw_scan + 1, device=dev, dtype=torch.long), cos, sin)
    # [NB, KVH, G*rows, D]
    pooled = pooled.view(nb, rows, kv_heads, group, dim).permute(0, 2, 3, 1, 4).reshape(nb, kv_heads, group * rows, dim)
    row_bias = torch.where(row_ok, 0.0, float("-inf")).repeat(1, group)  # [NB, G*rows]

    p_min = blk_pos[:, None]
    active = (left >= 0) & (left <= p_min - sw_scan) & (left < INVALID)
    lo = torch.where(active, left, torch.zeros_like(left)).long()
    hi = torch.where(active, torch.minimum(left + chunk_size, p_min + 1), lo + 1).long()
    table = block_table[blk_row.long()].long()  # [NB, T_max]
    if rope_mode == ROPE_STREAMING:
        kpos = torch.arange(n, device=dev)[None, :].expand(nb, n)

    def score(tok: torch.Tensor, branch: int) -> torch.Tensor:
        keys = read_rows(k_buf, table.gather(1, tok), active, cache,
                         None if cache is None else cache.bank_k).float()  # [NB, n, KVH, D]
        if rope_mode == ROPE_STREAMING:
            keys = rope_rows(keys, kpos, cos, sin)
        elif rope_mode == ROPE_RELATIVE:
            keys = rope_rows(keys, torch.full_like(tok, branch), cos, sin)
        s = torch.einsum("bhrd,bnhd->bnhr", pooled, keys) + row_bias.view(nb, 1, 1, group * rows)
        return s.amax(dim=(2, 3))  # [NB, n]

    best = torch.full((nb, n), float("-inf"), device=dev)
    for _ in range(max(1, (chunk_size - 1).bit_length())):
        mid = (lo + hi) // 2
        rl, rr = (lo + mid) // 2, (mid + hi) // 2
        s_l, s_r = score(rl, 0), score(rr, 1)
        go_left = s_l >= s_r
        narrow = hi - lo > 1
        hi = torch.where(narrow & go_left, mid, hi)
        lo = torch.where(narrow & ~go_left, mid, lo)
        best = torch.maximum(best, torch.maximum(s_l, s_r))
    return torch.where(active, best, torch.full_like(best, float("-inf")))


def hip_bsa_ref(q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                block_k: int, sink: int, window: int, extend: bool, cos, sin, block_size_q: int,
                blocks_per_call: int = 16, cache=None) -> torch.Tensor:
    """Block-sparse attention of each query block over sink + selected blocks + sliding window.

    starts [NB, kmax] selected block starts (first `ks` entries valid, ascending); ks [NB].
    Query p sees sink keys idx < sink, selected keys `start <= idx < start + block_k` with
    idx >= sink, and both only when idx <= p - window; window keys p - window < idx <= p.
    With `extend`, keys are rotated at compacted positions (StreamingLLM style): the block's selected
    tokens, counted as ks * block_k, sit just before the window of its first query p_min, the sink
    tokens just before them (clamped at 0), window keys at their own position and the query at p.
    RoPE is relative, so every position of a block is shifted down by max(0, first compacted one)
    (the table then needs only bq + window + sink + kmax * block_k rows). Returns [Nq, H, D] in q's dtype.
    `cache`: k_buf / v_buf are an offloaded pool read through this cache (`read_rows`).
    """
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    for b0 in range(0, int(blk_row.shape[0]), blocks_per_call):
        sl = slice(b0, b0 + blocks_per_call)
        _bsa_blocks(out, q, k_buf, v_buf, block_table, blk_row[sl], blk_q_start[sl], blk_q_len[sl], blk_pos[sl],
                    starts[sl], ks[sl], block_k, sink, window, extend, cos, sin, block_size_q, cache)
    return out.to(q.dtype)


def _bsa_blocks(out, q, k_buf, v_buf, block_table, blk_row, blk_q_start, blk_q_len, blk_pos, starts, ks,
                block_k, sink, window, extend, cos, sin, bq, cache=None):
    heads, dim, kv_heads, group = _heads(q, k_buf)
    dev = q.device
    qb, valid = _block_queries(q, blk_q_start, blk_q_len, bq)  # [NB, bq, H, D]
    p_min = blk_pos[:, None]
    qpos = p_min + torch.arange(bq, device=dev)[None, :]  # [NB, bq]
    p_max = p_min + blk_q_len[:, None] - 1
    # only the key slots some block can use (short contexts stay cheap): the selected blocks up to
    # the largest ks, the window span from its first existing token
    kmax = min(int(ks.max()) if ks.numel() else 0, starts.shape[1])
    starts = starts[:, :kmax]
    win_lo = (p_min - window + 1).clamp(min=0)
    span = min(window + bq - 1, int((p_max - win_lo).max()) + 1 if p_max.numel() else 1)
    nb = starts.shape[0]

    # key token indices of a block: sink | selected | window span (p_min - window, p_max]
    sink_idx = torch.arange(sink, device=dev)[None, :].expand(nb, sink)
    offs = torch.arange(block_k, device=dev)
    sel_ok_blk = torch.arange(kmax, device=dev)[None, :] < ks[:, None]
    sel_idx = (torch.where(sel_ok_blk, starts, torch.zeros_like(starts))[:, :, None] + offs).reshape(nb, kmax * block_k)
    sel_ok = sel_ok_blk[:, :, None].expand(nb, kmax, block_k).reshape(nb, kmax * block_k)
    win_idx = win_lo + torch.arange(max(span, 1), device=dev)[None, :]
    idx = torch.cat((sink_idx, sel_idx, win_idx), dim=1).long()  # [NB, L]
    n_sink_sel = sink + kmax * block_k
    part_far = torch.arange(idx.shape[1], device=dev)[None, :] < n_sink_sel  # sink or selected
    # which keys each query sees: [NB, bq, L]
    qp = qpos[:, :, None]
    kk = idx[:, None, :]
    key_ok = torch.cat((torch.ones_like(sink_idx, dtype=torch.bool), sel_ok & (sel_idx >= sink), win_idx >= 0), dim=1)
    far_ok = kk <= qp - window
    near_ok = (kk > qp - window) & (kk <= qp)
    visible = torch.where(part_far[:, None, :], far_ok, near_ok) & key_ok[:, None, :] & valid[:, :, None]

    safe = idx.clamp(min=0)
    safe = torch.minimum(safe, p_max.clamp(min=0))  # never gather a slot past the block's last query
    table = block_table[blk_row.long()].long()
    slots = table.gather(1, safe)
    seen = visible.any(1)  # [NB, L]: the keys some query of the block reads
    keys = read_rows(k_buf, slots, seen, cache, None if cache is None else cache.bank_k).float()  # [NB, L, KVH, D]
    vals = read_rows(v_buf, slots, seen, cache, None if cache is None else cache.bank_v).float()
    if extend:
        first = p_min - window - ks[:, None] * block_k + 1 - sink  # compacted position of sink token 0
        base = first.clamp(min=0)
        rank = torch.arange(n_sink_sel, device=dev)[None, :]
        far_pos = (first - base + rank).clamp(min=0)
        near_pos = (win_idx - base).clamp(min=0)
        kpos = torch.cat((far_pos, near_pos), dim=1)
        keys = rope_rows(keys, kpos, cos, sin)
        qb = rope_rows(qb, (qpos - base).clamp(min=0), cos, sin)
    # scores [NB, KVH, G, bq, L]
    qg = qb.view(nb, bq, kv_heads, group, dim).permute(0, 2, 3, 1, 4)
    scores = torch.einsum("bhgqd,blhd->bhgql", qg, keys)
    scores = scores.masked_fill(~visible[:, None, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    o = torch.einsum("bhgql,blhd->bqhgd", probs, vals).reshape(nb, bq, heads, dim)
    q_idx = (blk_q_start[:, None] + torch.arange(bq, device=dev)[None, :])[valid]
    out[q_idx.long()] = o[valid]
