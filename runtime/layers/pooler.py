"""Pooling of per-token hidden states into one vector per request (embedding and reward models).

SGLang's `Pooler(LAST, normalize=True)` takes the last token's final hidden state and L2-normalizes
it; MEAN averages every token's. A long prompt is prefilled in chunks, so pooling is split in two:
`pool_rows` reduces one forward's rows per request (the last row, or the row sum), the scheduler
keeps that across chunks, and `Pooler.finish` turns the whole prompt's reduction into the
embedding (dividing a MEAN sum by the prompt length, then normalizing).
"""

from __future__ import annotations

import enum
from typing import List, Sequence

import torch
from torch import nn

from sgl.runtime.executor.forward_batch import ForwardBatch


class PoolingType(enum.Enum):
    LAST = "last"
    MEAN = "mean"

    @property
    def needs_every_token(self) -> bool:
        """MEAN reads every token's hidden state, so a cached prefix cannot be skipped."""
        return self is PoolingType.MEAN


def pooling_type_of(config) -> PoolingType:
    """The config's `pooling_type` ("last" or "mean"; set with --json-model-override-args, or read
    from a sentence-transformers `1_Pooling/config.json`), LAST when absent."""
    name = str(getattr(config, "pooling_type", None) or "last").lower()
    try:
        return PoolingType(name)
    except ValueError:
        raise ValueError(f"pooling_type {name!r} is not supported; choose one of "
                         f"{[p.value for p in PoolingType]}") from None


def pool_rows(hidden: torch.Tensor, extend_lens: Sequence[int], pooling: PoolingType) -> torch.Tensor:
    """hidden [sum(extend_lens), H] -> float32 [bs, H]: each request's last row (LAST) or the sum
    of its rows (MEAN)."""
    lens = torch.tensor(list(extend_lens), device=hidden.device)
    if pooling is PoolingType.LAST:
        return hidden[torch.cumsum(lens, 0) - 1].float()
    owner = torch.repeat_interleave(torch.arange(len(extend_lens), device=hidden.device), lens)
    sums = torch.zeros(len(extend_lens), hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    return sums.index_add_(0, owner, hidden.float())


class Pooler(nn.Module):
    def __init__(self, pooling_type: PoolingType = PoolingType.LAST, normalize: bool = True):
        super().__init__()
        self.pooling_type = pooling_type
        self.normalize = normalize

    def finish(self, pooled: torch.Tensor, num_tokens: List[int]) -> torch.Tensor:
        """[k, H] reductions over whole prompts of `num_tokens` tokens -> [k, H] embeddings."""
        if self.pooling_type is PoolingType.MEAN:
            pooled = pooled / torch.tensor(num_tokens, dtype=pooled.dtype, device=pooled.device)[:, None]
        return nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled

    def forward(self, hidden: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        """One forward that holds whole prompts (no cached prefix): [T, H] -> [bs, H]."""
        lens = forward_batch.extend_seq_lens_cpu
        return self.finish(pool_rows(hidden, lens, self.pooling_type), list(lens))
