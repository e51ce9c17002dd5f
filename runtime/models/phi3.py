"""Phi-3 (mini / medium, 4k and 128k): the Llama decoder with checkpoints that already fuse q/k/v
(`qkv_proj`) and gate/up (`gate_up_proj`), partial RoPE (`partial_rotary_factor`), LongRoPE scaling
for the 128k models (runtime/layers/rotary.py) and `sliding_window` on every layer."""

from __future__ import annotations

from typing import Iterator, Tuple

import torch

from sgl.runtime.models.llama import LlamaForCausalLM


class Phi3ForCausalLM(LlamaForCausalLM):
    windowed = True

    def checkpoint_parts(self, name: str, tensor: torch.Tensor) -> Iterator[Tuple[str, torch.Tensor, object]]:
        """The fused checkpoint tensors cut into the shards our fused layers load (so tensor
        parallelism slices each part by heads, as for separate projections)."""
        if ".qkv_proj." in name:
            attn = self.model.layers[0].self_attn.qkv_proj
            sizes = [attn.total_num_heads * attn.head_size] + [attn.total_num_kv_heads * attn.head_size] * 2
            if tensor.shape[0] != sum(sizes):
                raise ValueError(f"{name} has {tensor.shape[0]} rows, expected q + k + v = {sum(sizes)}")
            yield from ((name, part, shard) for part, shard in zip(tensor.split(sizes), "qkv"))
        elif ".gate_up_proj." in name:
            if tensor.shape[0] % 2:
                raise ValueError(f"{name} has an odd number of rows {tensor.shape[0]}: expected gate and up halves")
            yield from ((name, part, shard) for shard, part in enumerate(tensor.chunk(2)))
        else:
            yield from super().checkpoint_parts(name, tensor)


EntryClass = [Phi3ForCausalLM]
