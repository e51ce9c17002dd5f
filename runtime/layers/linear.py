"""Linear layers with tensor-parallel partitioning built in.

Every layer stores its weight as [out_per_rank, in_per_rank] and gives its parameters a
`weight_loader(param, loaded_weight, shard_id=None)` that cuts this rank's slice out of the full
checkpoint tensor and, for fused layers, places it at the shard's offset (q/k/v, gate/up). The
rank and tp_size default to this process's tensor-parallel group (runtime/distributed), so model
files name only the kind of each linear; how it is split is decided here and in
`distributed/partition.py`. At tp_size=1 (the default) every slice is the whole tensor and no
collective runs.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import nn

from sgl.runtime.distributed.parallel_state import all_gather, all_reduce, resolve_tp
from sgl.runtime.distributed.partition import Part, even_part, shard_heads
from sgl.runtime.layers.cpu_gemm import PackableWeight

ShardId = Optional[Union[str, int]]


def make_param(*shape: int, loader) -> nn.Parameter:
    # torch.empty: the loader (or dummy init) fills every value, so initializing here is wasted work
    param = nn.Parameter(torch.empty(*shape), requires_grad=False)
    param.weight_loader = loader
    return param


def copy_checked(param: torch.Tensor, loaded: torch.Tensor, name: str = "weight") -> None:
    if tuple(param.shape) != tuple(loaded.shape):
        raise ValueError(f"{name} shape mismatch: parameter {tuple(param.shape)}, checkpoint {tuple(loaded.shape)}")
    param.copy_(loaded)


def part_of(loaded: torch.Tensor, dim: int, full_size: int, part: Part, name: str = "weight") -> torch.Tensor:
    """`part` of a checkpoint tensor whose `dim` must be `full_size`."""
    if loaded.dim() <= dim or loaded.shape[dim] != full_size:
        raise ValueError(f"{name} shape mismatch: expected size {full_size} in dim {dim}, checkpoint has {tuple(loaded.shape)}")
    return loaded.narrow(dim, part.start, part.size)


def default_weight_loader(param: torch.Tensor, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
    if shard_id is not None:
        raise ValueError(f"this parameter is not fused; got shard_id {shard_id!r}")
    with torch.no_grad():
        copy_checked(param.data, loaded_weight)


class LinearBase(PackableWeight, nn.Module):
    """y = x W^T + b, with W of shape [output_size_per_partition, input_size_per_partition]
    (on CPU through a packed copy of W once `cpu_gemm.pack_model` has made one)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True, tp_rank: Optional[int] = None,
                 tp_size: Optional[int] = None, input_size_per_partition: Optional[int] = None,
                 output_size_per_partition: Optional[int] = None):
        super().__init__()
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        if not 0 <= tp_rank < tp_size:
            raise ValueError(f"tp_rank {tp_rank} out of range for tp_size {tp_size}")
        self.input_size, self.output_size = input_size, output_size
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.input_size_per_partition = input_size_per_partition or input_size
        self.output_size_per_partition = output_size_per_partition or output_size
        self.weight = make_param(self.output_size_per_partition, self.input_size_per_partition, loader=self.weight_loader)
        self.bias = make_param(self.output_size_per_partition, loader=self.weight_loader) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        default_weight_loader(param, loaded_weight, shard_id)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.input_size_per_partition}, out={self.output_size_per_partition}, bias={self.bias is not None}, tp={self.tp_size}"


class ReplicatedLinear(LinearBase):
    """Every rank holds the full weight."""


class ColumnParallelLinear(LinearBase):
    """Output features split across ranks: rank r holds rows [r*out/tp, (r+1)*out/tp) of W."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True, gather_output: bool = False,
                 tp_rank: Optional[int] = None, tp_size: Optional[int] = None):
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        self.out_part = even_part(output_size, tp_rank, tp_size, "output size")
        super().__init__(input_size, output_size, bias, tp_rank, tp_size, output_size_per_partition=self.out_part.size)
        self.gather_output = gather_output

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id is not None:
            raise ValueError(f"{type(self).__name__} is not fused; got shard_id {shard_id!r}")
        with torch.no_grad():
            copy_checked(param.data, part_of(loaded_weight, 0, self.output_size, self.out_part))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.matmul(x, self.bias)
        return all_gather(out) if self.gather_output else out


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of the same input fused into one matmul (e.g. gate/up);
    `shard_id` is the index into `output_sizes`. Each rank holds its slice of every projection."""

    def __init__(self, input_size: int, output_sizes: List[int], bias: bool = True, gather_output: bool = False,
                 tp_rank: Optional[int] = None, tp_size: Optional[int] = None):
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        self.output_sizes = list(output_sizes)
        self.shard_parts = [even_part(size, tp_rank, tp_size, "merged output size") for size in self.output_sizes]
        super().__init__(input_size, sum(output_sizes), bias, gather_output, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self.output_sizes):
            raise ValueError(f"shard_id must be an index below {len(self.output_sizes)}, got {shard_id!r}")
        part = self.shard_parts[shard_id]
        offset = sum(p.size for p in self.shard_parts[:shard_id])
        with torch.no_grad():
            loaded = part_of(loaded_weight, 0, self.output_sizes[shard_id], part, f"shard {shard_id}")
            copy_checked(param.data.narrow(0, offset, part.size), loaded)


class QKVParallelLinear(LinearBase):
    """The fused q/k/v projection, split by KV groups (distributed/partition.py: a rank holds
    whole groups, possibly more than another rank; with more ranks than KV heads each KV head is
    replicated on tp_size / num_kv_heads ranks). `shard_id` is "q", "k" or "v"."""

    def __init__(self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: Optional[int] = None,
                 bias: bool = True, tp_rank: Optional[int] = None, tp_size: Optional[int] = None):
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        total_num_kv_heads = total_num_kv_heads or total_num_heads
        self.total_num_heads, self.total_num_kv_heads = total_num_heads, total_num_kv_heads
        self.head_size = head_size
        self.heads = shard_heads(total_num_heads, total_num_kv_heads, tp_rank, tp_size)
        self.num_heads, self.num_kv_heads = self.heads.q.size, self.heads.kv.size
        self.q_size = self.num_heads * head_size
        self.kv_size = self.num_kv_heads * head_size
        #: this rank's rows of the attention output, i.e. of the output projection's input
        self.q_part = self.heads.q_rows(head_size)
        full = (total_num_heads + 2 * total_num_kv_heads) * head_size
        super().__init__(hidden_size, full, bias, tp_rank, tp_size,
                         output_size_per_partition=self.q_size + 2 * self.kv_size)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id == "q":
            offset, heads, part = 0, self.total_num_heads, self.q_part
        elif shard_id in ("k", "v"):
            offset = self.q_size + (self.kv_size if shard_id == "v" else 0)
            heads, part = self.total_num_kv_heads, self.heads.kv_rows(self.head_size)
        else:
            raise ValueError(f"shard_id must be 'q', 'k' or 'v', got {shard_id!r}")
        loaded = part_of(loaded_weight, 0, heads * self.head_size, part, f"{shard_id} projection")
        with torch.no_grad():
            copy_checked(param.data.narrow(0, offset, part.size), loaded, f"{shard_id} projection")


class RowParallelLinear(LinearBase):
    """Input features split across ranks; partial products are summed with an all-reduce. Only
    rank 0 adds the bias, so the sum holds it once (with or without `reduce_results`).
    `input_part` is this rank's slice of the input when it is not an even split (the attention
    output projection takes the query heads' split: `QKVParallelLinear.q_part`)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True, input_is_parallel: bool = True,
                 reduce_results: bool = True, tp_rank: Optional[int] = None, tp_size: Optional[int] = None,
                 input_part: Optional[Part] = None):
        tp_rank, tp_size = resolve_tp(tp_rank, tp_size)
        self.in_part = input_part or even_part(input_size, tp_rank, tp_size, "input size")
        super().__init__(input_size, output_size, bias, tp_rank, tp_size, input_size_per_partition=self.in_part.size)
        self.input_is_parallel = input_is_parallel
        self.reduce_results = reduce_results

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id is not None:
            raise ValueError(f"RowParallelLinear is not fused; got shard_id {shard_id!r}")
        if param.dim() == 2:
            loaded_weight = part_of(loaded_weight, 1, self.input_size, self.in_part)
        with torch.no_grad():
            copy_checked(param.data, loaded_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel and self.tp_size > 1:
            x = x.narrow(-1, self.in_part.start, self.in_part.size)
        out = self.matmul(x, self.bias if self.tp_rank == 0 else None)
        return all_reduce(out) if self.reduce_results else out
