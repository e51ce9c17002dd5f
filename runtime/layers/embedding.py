"""Token embeddings and the LM head, split over the vocabulary across tensor-parallel ranks.

Rank r holds rows [r*per_rank, (r+1)*per_rank) with per_rank = ceil(vocab / tp_size); rows past the
vocabulary on the last rank are zero padding (their logits are cut off by the logits processor).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sgl.runtime.distributed.parallel_state import all_reduce, resolve_tp
from sgl.runtime.layers.cpu_gemm import PackableWeight
from sgl.runtime.layers.linear import ShardId, copy_checked, make_param


class VocabParallelEmbedding(PackableWeight, nn.Module):
    """Token embeddings; also the LM head when the model ties them (`matmul`, a packed copy on CPU)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, tp_rank: Optional[int] = None,
                 tp_size: Optional[int] = None):
        super().__init__()
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"embedding needs positive sizes, got vocab {num_embeddings}, dim {embedding_dim}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.num_embeddings_per_partition = -(-num_embeddings // tp_size)
        self.vocab_start = tp_rank * self.num_embeddings_per_partition
        self.vocab_end = min(self.vocab_start + self.num_embeddings_per_partition, num_embeddings)
        self.weight = make_param(self.num_embeddings_per_partition, embedding_dim, loader=self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id is not None:
            raise ValueError(f"embeddings are not fused; got shard_id {shard_id!r}")
        if loaded_weight.shape[0] != self.num_embeddings:
            raise ValueError(f"embedding has {self.num_embeddings} rows, checkpoint has {loaded_weight.shape[0]}")
        rows = self.vocab_end - self.vocab_start
        with torch.no_grad():
            param.data[rows:].zero_()
            copy_checked(param.data[:rows], loaded_weight[self.vocab_start : self.vocab_end])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        outside = (input_ids < self.vocab_start) | (input_ids >= self.vocab_end)
        local = (input_ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0)
        return all_reduce(out)

    def extra_repr(self) -> str:
        return f"vocab={self.num_embeddings}, dim={self.embedding_dim}, rows=[{self.vocab_start}, {self.vocab_end})"


class ParallelLMHead(VocabParallelEmbedding):
    """Holds the output projection; logits are computed by `LogitsProcessor`, not by calling it."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("ParallelLMHead is applied by LogitsProcessor; call model.compute_logits instead")
