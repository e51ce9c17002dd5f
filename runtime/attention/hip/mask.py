"""HiP mask estimation: the multi-stage pruning pipeline around the per-stage kernel.

Each stage scores candidate chunks (`prune_stage`: the Triton kernel on GPUs, the PyTorch reference
elsewhere); between stages the glue keeps the best chunks, sorts them by position and splits each into
the next stage's chunks; the last stage's best chunks are the key blocks of the sparse attention. All
lists are [NB, n] tensors of chunk starts, padded with INVALID, so the shapes of the stages after the
first are fixed by the configuration (what the decode mask cache stores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from sgl.kernels.hip_reference import INVALID, ROPE_NONE, ROPE_RELATIVE, ROPE_STREAMING, hip_bsa_ref, hip_prune_stage_ref
from sgl.kernels.utils import use_triton
from sgl.runtime.attention.hip.config import HipLayerConfig


@dataclass
class QueryBlocks:
    """Query blocks of one forward (see sgl.kernels.hip_reference): [NB] int64 tensors."""

    row: torch.Tensor
    q_start: torch.Tensor
    q_len: torch.Tensor
    pos: torch.Tensor
    block_size_q: int
    max_pos: int  # largest first position of a block (host int: sizes the first stage)

    @staticmethod
    def for_extend(req_rows: List[int], prefix_lens: List[int], extend_lens: List[int], bq: int,
                   device) -> "QueryBlocks":
        row, q_start, q_len, pos = [], [], [], []
        start = 0
        for r, pre, ext in zip(req_rows, prefix_lens, extend_lens):
            # The last query of a segment is a block of its own: it is the one whose logits give the
            # next token, and in a block its mask is the union of what all 64 queries want (one
            # question at the end of a long prompt loses the key it asks about to the filler before it)
            bounds = [(j, min(bq, ext - 1 - j)) for j in range(0, ext - 1, bq)] + [(ext - 1, 1)] if ext > 0 else []
            for j, n in bounds:
                row.append(r)
                q_start.append(start + j)
                q_len.append(n)
                pos.append(pre + j)
            start += ext
        return QueryBlocks(*_tensors(device, row, q_start, q_len, pos), block_size_q=bq, max_pos=max(pos, default=0))

    @staticmethod
    def for_decode(req_rows: torch.Tensor, seq_lens: torch.Tensor, max_seq_len: int) -> "QueryBlocks":
        bs = req_rows.shape[0]
        dev = req_rows.device
        return QueryBlocks(req_rows.long(), torch.arange(bs, device=dev), torch.ones(bs, dtype=torch.long, device=dev),
                           seq_lens.long() - 1, block_size_q=1, max_pos=max_seq_len - 1)


def _tensors(device, *lists):
    return [torch.tensor(x, dtype=torch.int64, device=device) for x in lists]


def rope_mode(cfg: HipLayerConfig, using_extend: bool) -> int:
    if not using_extend:
        return ROPE_NONE
    return ROPE_STREAMING if cfg.scan_extend_backend == "streaming" else ROPE_RELATIVE


def first_candidates(cfg: HipLayerConfig, blocks: QueryBlocks) -> torch.Tensor:
    """Every first-stage chunk that can be active for some block: [NB, n]."""
    c0 = cfg.stages[0].chunk_size
    span = blocks.max_pos - cfg.sw_scan - cfg.sink_token_size
    n = max(1, span // c0 + 1) if span >= 0 else 1
    left = cfg.sink_token_size + c0 * torch.arange(n, device=blocks.row.device)
    return left[None, :].expand(blocks.row.shape[0], n).contiguous()


def keep_best(left: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` best-scoring chunks (those scoring -inf dropped), sorted by position: [NB, keep].

    The top-k comes unsorted and the positions are sorted as int32 (they are below INVALID = 2^30):
    on an H100 at 1M keys the sorted top-k and the int64 sort were a third of a refresh step's
    kernel time (radix sorts of 17-53 us each)."""
    nb, n = left.shape
    k = min(keep, n)
    top_scores, top = scores.topk(k, dim=1, sorted=False)
    kept = torch.where(torch.isfinite(top_scores), left.gather(1, top), torch.full_like(top, INVALID))
    if k < keep:
        kept = torch.cat((kept, torch.full((nb, keep - k), INVALID, dtype=kept.dtype, device=kept.device)), dim=1)
    return kept.to(torch.int32).sort(dim=1).values.to(left.dtype)


def split_chunks(kept: torch.Tensor, chunk: int, next_chunk: int) -> torch.Tensor:
    sub = next_chunk * torch.arange(chunk // next_chunk, device=kept.device)
    out = kept[:, :, None] + sub
    return torch.where(kept[:, :, None] >= INVALID, torch.full_like(out, INVALID), out).flatten(1)


def n_active(left: torch.Tensor, blocks: QueryBlocks, sw_scan: int) -> torch.Tensor:
    return (left <= blocks.pos[:, None] - sw_scan).sum(1)


def prune_stage(q, k_buf, block_table, blocks: QueryBlocks, left, cfg: HipLayerConfig, stage: int, mode: int, cos, sin,
                cache=None):
    st = cfg.stages[stage]
    fn = hip_prune_stage_ref
    if use_triton(q):
        from sgl.kernels.hip_prune import hip_prune_stage as fn
    # a decode block holds one query: one pooled row
    bq = max(blocks.block_size_q, st.stride_q)
    return fn(q, k_buf, block_table, blocks.row, blocks.q_start, blocks.q_len, blocks.pos, left,
              n_active(left, blocks, cfg.sw_scan), st.chunk_size, st.stride_q, cfg.sw_scan, mode, cos, sin, bq,
              cache=cache)


@dataclass
class MaskState:
    """A layer's mask for a set of query blocks, with the inputs of stages 1.. (the decode cache)."""

    starts: torch.Tensor  # [NB, max_blocks]
    ks: torch.Tensor  # [NB]
    stage_inputs: List[Optional[torch.Tensor]]  # [None, [NB, n_1], [NB, n_2], ...]


def estimate_mask(q, k_buf, block_table, blocks: QueryBlocks, cfg: HipLayerConfig, using_extend: bool, cos, sin,
                  from_stage: int = 0, cached: Optional[MaskState] = None,
                  row_from: Optional[torch.Tensor] = None, cache=None) -> MaskState:
    """Run stages `from_stage`.. and return the mask.

    Decode passes the previous mask (`cached`) and, per block, the first stage it recomputes
    (`row_from`, a [NB] tensor, len(stages) meaning "keep the cached mask"): a block takes the cached
    input of every stage before its own, so a batch whose requests are at different points of the
    refresh schedule runs once, from the earliest stage any of them needs. `cache`: k_buf is an
    offloaded pool read through this GPU cache (decode; sgl.kernels.hip_offload).
    """
    mode = rope_mode(cfg, using_extend)
    stages = cfg.stages
    inputs: List[Optional[torch.Tensor]] = [None] * len(stages)
    left = first_candidates(cfg, blocks) if from_stage == 0 else cached.stage_inputs[from_stage]
    scores = None
    for s in range(from_stage, len(stages)):
        if s > from_stage:
            prev = stages[s - 1].chunk_size
            left = split_chunks(keep_best(left, scores, stages[s].k // prev), prev, stages[s].chunk_size)
            if cached is not None:
                left = torch.where((row_from > s - 1)[:, None], cached.stage_inputs[s], left)
        if s > 0:
            inputs[s] = left
        scores = prune_stage(q, k_buf, block_table, blocks, left, cfg, s, mode, cos, sin, cache)
    starts = keep_best(left, scores, cfg.max_blocks)
    ks = (starts < INVALID).sum(1)
    if cached is not None:
        keep_old = (row_from >= len(stages))
        starts = torch.where(keep_old[:, None], cached.starts, starts)
        ks = torch.where(keep_old, cached.ks, ks)
        for s in range(1, len(stages)):
            if inputs[s] is None:  # stages before `from_stage`: every block keeps its cached input
                inputs[s] = cached.stage_inputs[s]
    return MaskState(starts, ks, inputs)


def block_sparse_attention(q, k_buf, v_buf, block_table, blocks: QueryBlocks, mask: MaskState, cfg: HipLayerConfig,
                           using_extend: bool, cos, sin, cache=None) -> torch.Tensor:
    fn = hip_bsa_ref
    if use_triton(q):
        from sgl.kernels.hip_bsa import hip_bsa as fn
    return fn(q, k_buf, v_buf, block_table, blocks.row, blocks.q_start, blocks.q_len, blocks.pos, mask.starts, mask.ks,
              cfg.block_k, cfg.sink_token_size, cfg.sliding_window_size, using_extend, cos, sin, blocks.block_size_q,
              cache=cache)


def rope_table_size(cfgs, block_size_q: int, context_len: int) -> int:
    """Rows of the RoPE table the kernels index (positions are block-relative, see hip_reference)."""
    need = 0
    for c in cfgs:
        sparse = block_size_q + c.sliding_window_size + c.sink_token_size + c.max_blocks * c.block_k
        n_max = max([context_len // c.stages[0].chunk_size + 2] + [st.k // st.chunk_size for st in c.stages[1:]])
        scan = n_max + c.sw_scan + block_size_q
        need = max(need, sparse, scan)
    return need
