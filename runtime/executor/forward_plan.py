"""ForwardPlan: one model forward as the model runner runs it, separated from the scheduler's state.

The scheduler hands the model runner a ScheduleBatch (requests, their cache state, sampling
state); the runner reduces it to a plan: the index lists and token tensors of the forward, and
which hidden rows need logits. Under tensor parallelism rank 0 broadcasts each plan and every
rank runs it (runtime/distributed/plan_channel.py), so a plan holds nothing but what the forward
reads, plus the `req_to_token` writes rank 0's scheduler made since the previous plan (`writes`),
which the other ranks replay into their copy of the table before they run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch

from sgl.runtime.executor.forward_batch import ForwardMode

#: a req_to_token write: (row, first column, slots) or (rows, columns, slots), one slot per cell
TableWrite = Tuple[Union[int, List[int]], Union[int, List[int]], torch.Tensor]
#: the plan's tensors, in the order they travel
TENSOR_FIELDS = ("input_ids", "positions", "out_cache_loc")


@dataclass
class ForwardPlan:
    forward_mode: ForwardMode
    input_ids: torch.Tensor  # [T] int64 (on the device; may still be computing under overlap)
    positions: torch.Tensor  # [T] int64
    out_cache_loc: torch.Tensor  # [T] int64: KV slots the new tokens are written to
    req_pool_indices: List[int]
    seq_lens: List[int]
    extend_lens: List[int] = field(default_factory=list)
    prefix_lens: List[int] = field(default_factory=list)
    num_decode_reqs: int = 0  # MIXED: the last this-many requests are decode steps
    #: hidden rows whose logits are computed: None for every row (decode), [] for none (pooling models)
    logit_rows: Optional[List[int]] = None
    writes: List[TableWrite] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return len(self.seq_lens)

    @property
    def wants_logits(self) -> bool:
        return self.logit_rows is None or bool(self.logit_rows)

    @classmethod
    def of_batch(cls, batch, logit_rows: Optional[List[int]]) -> "ForwardPlan":
        extend = batch.forward_mode.is_extend()
        return cls(
            forward_mode=batch.forward_mode, input_ids=batch.input_ids, positions=batch.positions,
            out_cache_loc=batch.out_cache_loc, req_pool_indices=batch.req_pool_indices(),
            seq_lens=list(batch.seq_lens), extend_lens=list(batch.extend_lens) if extend else [],
            prefix_lens=list(batch.prefix_lens) if extend else [], num_decode_reqs=batch.num_decode_reqs,
            logit_rows=logit_rows,
        )


def extend_logit_rows(batch) -> Tuple[List[int], List[Tuple[int, int]]]:
    """The hidden rows of an extend batch that need logits: each request's last token, and the
    prompt positions whose input logprobs were asked for; with, per request, (first row in that
    list, number of rows)."""
    rows: List[int] = []
    spans: List[Tuple[int, int]] = []
    start = 0
    for req, pre, ext in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
        first = start + ext - 1
        if req.return_logprob and req.input_token_logprobs is None and not req.is_chunked:
            first = start + max(req.logprob_start_len - pre, 0)
        spans.append((len(rows), start + ext - first))
        rows.extend(range(first, start + ext))
        start += ext
    return rows, spans


def apply_writes(pool, writes: Sequence[TableWrite]) -> None:
    """Replay rank 0's req_to_token writes, in order, into another rank's table."""
    for target, col, slots in writes:
        if isinstance(target, int):
            pool.write(target, col, slots)
        else:
            pool.write_cells(target, col, slots)
