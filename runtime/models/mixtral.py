"""Mixtral: the Llama decoder with a sparse mixture of SwiGLU experts in place of the dense MLP.

Checkpoint names: the router `block_sparse_moe.gate.weight` and the experts
`block_sparse_moe.experts.{e}.w1|w3|w2.weight` (gate, up, down) go into `mlp.gate` and the stacked
`mlp.experts.w13_weight` / `mlp.experts.w2_weight` (layers/moe.py); the stacked form transformers 5 keeps in
memory (`mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I]) loads as well.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Set, Tuple

import torch
from torch import nn
from transformers import PretrainedConfig

from sgl.runtime.layers.embedding import VocabParallelEmbedding
from sgl.runtime.layers.layernorm import RMSNorm
from sgl.runtime.layers.linear import ReplicatedLinear
from sgl.runtime.layers.moe import FusedMoE
from sgl.runtime.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel

_EXPERT = re.compile(r"^(.*)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
_RENAMES = ((".block_sparse_moe.", ".mlp."), (".mlp.experts.gate_up_proj", ".mlp.experts.w13_weight"),
            (".mlp.experts.down_proj", ".mlp.experts.w2_weight"))


class MixtralMoE(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; Mixtral experts use silu")
        self.gate = ReplicatedLinear(config.hidden_size, config.num_local_experts, bias=False)
        self.experts = FusedMoE(config.num_local_experts, config.num_experts_per_tok, config.hidden_size,
                                config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x, self.gate(x))


class MixtralDecoderLayer(LlamaDecoderLayer):
    """Llama's layer (and forward) with `mlp` the sparse MoE block."""

    def __init__(self, config: PretrainedConfig, layer_id: int, attention_options):
        nn.Module.__init__(self)
        self.self_attn = LlamaAttention(config, layer_id, attention_options)
        self.mlp = MixtralMoE(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MixtralModel(LlamaModel):
    def __init__(self, config: PretrainedConfig, attention_options):
        nn.Module.__init__(self)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MixtralDecoderLayer(config, i, attention_options) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MixtralForCausalLM(LlamaForCausalLM):
    model_cls = MixtralModel
    windowed = True  # `sliding_window` on every layer, as HF applies it (null in the released configs)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> Set[str]:
        """Expert matrices go to their slice of the stacked expert weights; the rest as in Llama."""
        params = dict(self.named_parameters())
        shards: Dict[str, Set[Tuple[int, str]]] = {}  # a stacked weight counts as loaded once every expert's parts came

        def others():
            for name, tensor in weights:
                match = _EXPERT.match(name)
                if match is None:
                    for old, new in _RENAMES:
                        name = name.replace(old, new)
                    yield name, tensor
                    continue
                prefix, expert, which = match.groups()
                param_name = f"{prefix}.mlp.experts.{'w2' if which == 'w2' else 'w13'}_weight"
                if param_name not in params:
                    raise ValueError(f"checkpoint tensor {name!r} has no matching parameter in {type(self).__name__}")
                params[param_name].weight_loader(params[param_name], tensor, (int(expert), which))
                shards.setdefault(param_name, set()).add((int(expert), which))

        loaded = super().load_weights(others())
        experts = self.config.num_local_experts
        return loaded | {name for name, parts in shards.items() if len(parts) == experts * (1 if name.endswith("w2_weight") else 2)}


EntryClass = [MixtralForCausalLM]
