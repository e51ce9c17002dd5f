"""Sparse mixture-of-experts with SwiGLU experts (Mixtral).

Each token's router logits pick `top_k` of E experts (softmax over all experts, the top-k kept and,
with `renormalize`, rescaled to sum to one); the token's output is the weighted sum of those
experts' `down(silu(gate(x)) * up(x))`. The experts' weights live stacked in two parameters:
`w13_weight` [E, 2I, H] (gate rows, then up rows) and `w2_weight` [E, H, I]. CUDA tensors take the
Triton fused-MoE kernels (sgl.kernels.fused_moe); other tensors the per-expert torch loop
(`fused_moe_ref`).

Under tensor parallelism every rank holds every expert, split along the intermediate dimension as
a dense MLP is (its I/tp gate and up rows, the matching down columns); the ranks' partial outputs
are summed with an all-reduce.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from sgl.kernels.reference import fused_moe_ref
from sgl.kernels.utils import use_triton
from sgl.runtime.distributed.parallel_state import all_reduce, resolve_tp
from sgl.runtime.distributed.partition import even_part
from sgl.runtime.layers.linear import copy_checked, make_param

#: shard ids of one expert's checkpoint tensors: (expert index, "w1" gate | "w3" up | "w2" down)
ExpertShard = Optional[Tuple[int, str]]


def select_experts(router_logits: torch.Tensor, top_k: int, renormalize: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (weights float32 [T, top_k], expert ids int64 [T, top_k])."""
    weights, ids = torch.topk(router_logits.float().softmax(dim=-1), top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


class FusedMoE(nn.Module):
    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int, renormalize: bool = True,
                 tp_rank: Optional[int] = None, tp_size: Optional[int] = None):
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok {top_k} must be between 1 and num_local_experts {num_experts}")
        tp_rank, self.tp_size = resolve_tp(tp_rank, tp_size)
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        self.full_intermediate_size = intermediate_size
        self.part = even_part(intermediate_size, tp_rank, self.tp_size, "intermediate_size")
        self.intermediate_size = inter = self.part.size  # this rank's
        self.w13_weight = make_param(num_experts, 2 * inter, hidden_size, loader=self.weight_loader)
        self.w2_weight = make_param(num_experts, hidden_size, inter, loader=self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id: ExpertShard = None) -> None:
        """shard_id None: the whole stacked tensor; (e, "w1"|"w3"|"w2"): one expert's [out, in] matrix.
        Either is cut to this rank's intermediate slice."""
        if shard_id is None:
            with torch.no_grad():
                copy_checked(param.data, self._rank_slice(loaded_weight, down=param is self.w2_weight))
            return
        expert, which = shard_id
        if which not in ("w1", "w2", "w3") or not 0 <= expert < self.num_experts:
            raise ValueError(f"bad expert shard {shard_id!r} for {self.num_experts} experts")
        target = param.data[expert]
        if which != "w2":
            target = target.narrow(0, 0 if which == "w1" else self.intermediate_size, self.intermediate_size)
        with torch.no_grad():
            copy_checked(target, self._rank_slice(loaded_weight, down=which == "w2"), f"expert {expert} {which}")

    def _rank_slice(self, loaded: torch.Tensor, down: bool) -> torch.Tensor:
        """This rank's slice of a checkpoint tensor: the columns of a down projection ([H, I] or
        stacked [E, H, I]), the rows of a gate or up ([I, H]), or of both halves of a stacked
        gate-then-up [E, 2I, H]. A tensor of another size is left whole for copy_checked to refuse."""
        if self.tp_size == 1:
            return loaded
        if down:
            return self._intermediate_rows(loaded, -1)
        if loaded.dim() == 3 and loaded.shape[-2] == 2 * self.full_intermediate_size:
            return torch.cat([self._intermediate_rows(half, -2) for half in loaded.chunk(2, dim=-2)], dim=-2)
        return self._intermediate_rows(loaded, -2)

    def _intermediate_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        if t.dim() < -dim or t.shape[dim] != self.full_intermediate_size:
            return t
        return t.narrow(dim, self.part.start, self.part.size)

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        """x [T, H], router_logits [T, E] -> [T, H] in x's dtype."""
        weights, ids = select_experts(router_logits, self.top_k, self.renormalize)
        if use_triton(x):
            from sgl.kernels.fused_moe import fused_moe

            out = fused_moe(x, self.w13_weight, self.w2_weight, weights, ids)
        else:
            out = fused_moe_ref(x, self.w13_weight, self.w2_weight, weights, ids)
        return all_reduce(out)

    def extra_repr(self) -> str:
        e, two_i, h = self.w13_weight.shape
        return f"experts={e}, top_k={self.top_k}, hidden={h}, intermediate={two_i // 2}"
