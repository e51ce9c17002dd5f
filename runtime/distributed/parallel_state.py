"""The tensor-parallel group of this process, and the collectives the layers run in it.

Each scheduler process is one TP rank. `init_tensor_parallel` joins the torch.distributed group
before the model is built; the parallel layers read `get_tp_group()` as they are constructed (so
the model files never mention ranks) and call `all_reduce` / `all_gather` in their forward.

Two process groups: `device_group` carries tensors in the device's backend (NCCL for CUDA, gloo
for CPU) and `cpu_group` (gloo) carries the pickled batch plans rank 0 broadcasts each step. The
plan group waits without a time limit, since a follower rank waits in it while the server is idle;
a rank that dies is noticed through its closed connections (gloo) or by the launcher watching
the processes, not through time-outs.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# Joining (how long a rank waits for the others to start, the other nodes' launches included) and
# each collective of the forward: a rank stuck this long means the group is broken.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# Plans: a follower waits for the next batch as long as the server is idle.
PLAN_TIMEOUT = datetime.timedelta(days=365)


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1
    device_group: Any = None
    cpu_group: Any = None


_GROUP = TPGroup()


def get_tp_group() -> TPGroup:
    return _GROUP


def resolve_tp(tp_rank: Optional[int], tp_size: Optional[int]) -> Tuple[int, int]:
    """Explicit (rank, size) where given, else this process's group (rank 0 of 1 without one)."""
    group = get_tp_group()
    return (group.rank if tp_rank is None else tp_rank), (group.size if tp_size is None else tp_size)


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_tensor_parallel(rank: int, size: int, init_method: str, device: str, gpu: int = 0) -> TPGroup:
    """Join the TP group of `size` ranks rendezvousing at `init_method` (tcp://host:port); on
    CUDA the rank uses GPU `gpu` of its node."""
    global _GROUP
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(gpu)
    dist.init_process_group(backend, init_method=init_method, world_size=size, rank=rank, timeout=COLLECTIVE_TIMEOUT)
    device_group = dist.group.WORLD
    cpu_group = dist.new_group(backend="gloo", timeout=PLAN_TIMEOUT)
    _GROUP = TPGroup(rank, size, device_group, cpu_group)
    logger.info("joined the tensor-parallel group as rank %d of %d (%s, %s)", rank, size, backend, init_method)
    return _GROUP


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over the TP ranks, in place (x itself at tp_size 1)."""
    group = get_tp_group()
    if group.size > 1:
        dist.all_reduce(x, group=group.device_group)
    return x


def all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The ranks' `x` concatenated along `dim`, in rank order."""
    group = get_tp_group()
    if group.size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(group.size)]
    dist.all_gather(parts, x.contiguous(), group=group.device_group)
    return torch.cat(parts, dim=dim)


def min_over_ranks(value: int) -> int:
    """The smallest of the ranks' `value`s (e.g. the KV pool size every rank can hold)."""
    group = get_tp_group()
    if group.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group.cpu_group)
    return int(t.item())
