"""Which slice of each weight a tensor-parallel rank holds.

Pure arithmetic (no torch.distributed): the layers call it when they are built, and the launcher
calls `check_tensor_parallel` on the model config before any process starts, so a tp_size the
model cannot be split by is refused with a message naming `--tp-size`.

Attention is split by *KV groups*: query head h belongs to KV head h // (heads / kv_heads), and a
rank holds whole groups, so its queries only read the KV heads it stores. With at least as many
KV heads as ranks, the groups are dealt out as evenly as they go: the first `kv_heads % tp_size`
ranks get one more (SmolLM2-135M at tp 2: 9 query / 3 KV heads -> rank 0 holds 6 / 2, rank 1
3 / 1). With more ranks than KV heads, each KV head is stored on tp_size / kv_heads ranks, which
share its group's query heads; tp_size must then be a multiple of kv_heads and divide the heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Part:
    """Rows [start, start + size) of a dimension split across ranks."""

    start: int
    size: int


def even_part(total: int, rank: int, tp_size: int, what: str = "size") -> Part:
    """The rank's equal share; ValueError when tp_size does not divide `total`."""
    size = divide(total, tp_size, what)
    return Part(rank * size, size)


def divide(numerator: int, denominator: int, what: str = "size") -> int:
    if numerator % denominator:
        raise ValueError(f"{what} {numerator} is not divisible by --tp-size {denominator}")
    return numerator // denominator


def balanced_part(total: int, rank: int, tp_size: int) -> Part:
    """Rank `rank`'s share of `total` items dealt as evenly as possible (the first ranks get one more)."""
    base, extra = divmod(total, tp_size)
    return Part(rank * base + min(rank, extra), base + (rank < extra))


@dataclass(frozen=True)
class HeadShard:
    """The attention heads one rank holds, as indices into the checkpoint's heads."""

    q: Part  # query heads
    kv: Part  # KV heads (a replicated KV head appears in several ranks' shards)

    def q_rows(self, head_dim: int) -> Part:
        return Part(self.q.start * head_dim, self.q.size * head_dim)

    def kv_rows(self, head_dim: int) -> Part:
        return Part(self.kv.start * head_dim, self.kv.size * head_dim)


def shard_heads(num_heads: int, num_kv_heads: Optional[int], rank: int, tp_size: int) -> HeadShard:
    kv_heads = num_kv_heads or num_heads
    if num_heads % kv_heads:
        raise ValueError(f"num_attention_heads {num_heads} is not a multiple of num_key_value_heads {kv_heads}")
    group = num_heads // kv_heads
    if tp_size <= kv_heads:
        kv = balanced_part(kv_heads, rank, tp_size)
        return HeadShard(Part(kv.start * group, kv.size * group), kv)
    if tp_size % kv_heads or num_heads % tp_size:
        raise ValueError(
            f"--tp-size {tp_size} cannot split {num_heads} attention heads over {kv_heads} KV heads: with more "
            f"ranks than KV heads, tp_size must be a multiple of num_key_value_heads ({kv_heads}) and divide "
            f"num_attention_heads ({num_heads}); a tp_size up to {kv_heads} always works")
    replicas = tp_size // kv_heads
    per_rank = num_heads // tp_size
    return HeadShard(Part(rank * per_rank, per_rank), Part(rank // replicas, 1))


def check_tensor_parallel(hf_config, tp_size: int) -> None:
    """ValueError naming --tp-size when the model's shapes cannot be split over tp_size ranks
    (the same rules the layers apply as they are built)."""
    if tp_size < 1:
        raise ValueError(f"--tp-size must be >= 1, got {tp_size}")
    if tp_size == 1:
        return
    shard_heads(hf_config.num_attention_heads, getattr(hf_config, "num_key_value_heads", None), 0, tp_size)
    intermediate = getattr(hf_config, "intermediate_size", None)
    if intermediate:
        divide(intermediate, tp_size, "intermediate_size")
