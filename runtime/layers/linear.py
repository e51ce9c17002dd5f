"""Linear layers with tensor-parallel partitioning built in.

Every layer stores its weight as [out_per_rank, in_per_rank] and gives its parameters a
`weight_loader(param, loaded_weight, shard_id=None)` that cuts this rank's slice out of the full
checkpoint tensor and, for fused layers, places it at the shard's offset (q/k/v, gate/up). At
tp_size=1 (the default) every slice is the whole tensor and no collective runs.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import nn

from sgl.runtime.layers.cpu_gemm import PackableWeight

ShardId = Optional[Union[str, int]]


def divide(numerator: int, denominator: int, what: str = "size") -> int:
    if numerator % denominator:
        raise ValueError(f"{what} {numerator} is not divisible by tp_size {denominator}")
    return numerator // denominator


def make_param(*shape: int, loader) -> nn.Parameter:
    # torch.empty: the loader (or dummy init) fills every value, so initializing here is wasted work
    param = nn.Parameter(torch.empty(*shape), requires_grad=False)
    param.weight_loader = loader
    return param


def copy_checked(param: torch.Tensor, loaded: torch.Tensor, name: str = "weight") -> None:
    if tuple(param.shape) != tuple(loaded.shape):
        raise ValueError(f"{name} shape mismatch: parameter {tuple(param.shape)}, checkpoint {tuple(loaded.shape)}")
    param.copy_(loaded)


def rank_slice(loaded: torch.Tensor, dim: int, full_size: int, index: int, size: int, name: str = "weight") -> torch.Tensor:
    """Slice `index` (of width `size`) of a checkpoint tensor whose `dim` must be `full_size`."""
    if loaded.dim() <= dim or loaded.shape[dim] != full_size:
        raise ValueError(f"{name} shape mismatch: expected size {full_size} in dim {dim}, checkpoint has {tuple(loaded.shape)}")
    return loaded.narrow(dim, index * size, size)


def default_weight_loader(param: torch.Tensor, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
    if shard_id is not None:
        raise ValueError(f"this parameter is not fused; got shard_id {shard_id!r}")
    with torch.no_grad():
        copy_checked(param.data, loaded_weight)


class LinearBase(PackableWeight, nn.Module):
    """y = x W^T + b, with W of shape [output_size_per_partition, input_size_per_partition]
    (on CPU through a packed copy of W once `cpu_gemm.pack_model` has made one)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True, tp_rank: int = 0, tp_size: int = 1,
                 in_partitioned: bool = False, out_partitioned: bool = False):
        super().__init__()
        if not 0 <= tp_rank < tp_size:
            raise ValueError(f"tp_rank {tp_rank} out of range for tp_size {tp_size}")
        self.input_size, self.output_size = input_size, output_size
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self.input_size_per_partition = divide(input_size, tp_size, "input size") if in_partitioned else input_size
        self.output_size_per_partition = divide(output_size, tp_size, "output size") if out_partitioned else output_size
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
                 tp_rank: int = 0, tp_size: int = 1):
        super().__init__(input_size, output_size, bias, tp_rank, tp_size, out_partitioned=True)
        self.gather_output = gather_output

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id is not None:
            raise ValueError(f"{type(self).__name__} is not fused; got shard_id {shard_id!r}")
        size = param.shape[0]
        with torch.no_grad():
            copy_checked(param.data, rank_slice(loaded_weight, 0, self.output_size, self.tp_rank, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.matmul(x, self.bias)
        if self.gather_output and self.tp_size > 1:
            out = _all_gather_last_dim(out, self.tp_size)
        return out


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of the same input fused into one matmul (e.g. gate/up);
    `shard_id` is the index into `output_sizes`."""

    def __init__(self, input_size: int, output_sizes: List[int], bias: bool = True, gather_output: bool = False,
                 tp_rank: int = 0, tp_size: int = 1):
        self.output_sizes = list(output_sizes)
        for size in self.output_sizes:
            divide(size, tp_size, "merged output size")
        super().__init__(input_size, sum(output_sizes), bias, gather_output, tp_rank, tp_size)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self.output_sizes):
            raise ValueError(f"shard_id must be an index below {len(self.output_sizes)}, got {shard_id!r}")
        size = self.output_sizes[shard_id] // self.tp_size
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        with torch.no_grad():
            part = rank_slice(loaded_weight, 0, self.output_sizes[shard_id], self.tp_rank, size, f"shard {shard_id}")
            copy_checked(param.data.narrow(0, offset, size), part)


class QKVParallelLinear(ColumnParallelLinear):
    """The fused q/k/v projection, split by heads. With more ranks than KV heads each KV head is
    replicated on tp_size / num_kv_heads ranks. `shard_id` is "q", "k" or "v"."""

    def __init__(self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: Optional[int] = None,
                 bias: bool = True, tp_rank: int = 0, tp_size: int = 1):
        total_num_kv_heads = total_num_kv_heads or total_num_heads
        self.total_num_heads, self.total_num_kv_heads = total_num_heads, total_num_kv_heads
        self.head_size = head_size
        self.num_heads = divide(total_num_heads, tp_size, "num_heads")
        if tp_size >= total_num_kv_heads:
            self.num_kv_heads, self.kv_replicas = 1, divide(tp_size, total_num_kv_heads, "tp_size over kv heads")
        else:
            self.num_kv_heads, self.kv_replicas = divide(total_num_kv_heads, tp_size, "num_kv_heads"), 1
        self.q_size = self.num_heads * head_size
        self.kv_size = self.num_kv_heads * head_size
        output_size = (self.num_heads + 2 * self.num_kv_heads) * head_size * tp_size
        super().__init__(hidden_size, output_size, bias, False, tp_rank, tp_size)

    def shard_range(self, shard_id: ShardId) -> "tuple[int, int, int]":
        """(offset in this rank's output, size, index of this rank's slice in the loaded tensor)."""
        if shard_id == "q":
            return 0, self.q_size, self.tp_rank
        if shard_id == "k":
            return self.q_size, self.kv_size, self.tp_rank // self.kv_replicas
        if shard_id == "v":
            return self.q_size + self.kv_size, self.kv_size, self.tp_rank // self.kv_replicas
        raise ValueError(f"shard_id must be 'q', 'k' or 'v', got {shard_id!r}")

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        offset, size, slice_index = self.shard_range(shard_id)
        heads = self.total_num_heads if shard_id == "q" else self.total_num_kv_heads
        part = rank_slice(loaded_weight, 0, heads * self.head_size, slice_index, size, f"{shard_id} projection")
        with torch.no_grad():
            copy_checked(param.data.narrow(0, offset, size), part, f"{shard_id} projection")


class RowParallelLinear(LinearBase):
    """Input features split across ranks; partial products are summed with an all-reduce. Only
    rank 0 adds the bias, so the sum holds it once (with or without `reduce_results`)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = True, input_is_parallel: bool = True,
                 reduce_results: bool = True, tp_rank: int = 0, tp_size: int = 1):
        super().__init__(input_size, output_size, bias, tp_rank, tp_size, in_partitioned=True)
        self.input_is_parallel = input_is_parallel
        self.reduce_results = reduce_results

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ShardId = None) -> None:
        if shard_id is not None:
            raise ValueError(f"RowParallelLinear is not fused; got shard_id {shard_id!r}")
        if param.dim() == 2:
            loaded_weight = rank_slice(loaded_weight, 1, self.input_size, self.tp_rank, param.shape[1])
        with torch.no_grad():
            copy_checked(param.data, loaded_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel and self.tp_size > 1:
            size = self.input_size_per_partition
            x = x.narrow(-1, self.tp_rank * size, size)
        out = self.matmul(x, self.bias if self.tp_rank == 0 else None)
        if self.reduce_results and self.tp_size > 1:
            torch.distributed.all_reduce(out)
        return out


def _all_gather_last_dim(x: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)
