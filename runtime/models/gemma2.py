"""Gemma 2: the Llama attention and gated MLP (gelu_pytorch_tanh) with Gemma's differences:
zero-centred RMSNorms (x * (1 + w)), four per layer (around attention and around the MLP, each
output normed before the residual add), embeddings scaled by sqrt(hidden_size) rounded to the
hidden dtype, scores scaled by query_pre_attn_scalar^-0.5 and soft-capped (`attn_logit_softcapping`),
a sliding window on the even layers, final logits soft-capped (`final_logit_softcapping`), tied
embeddings. The soft-cap and window live in RadixAttention; a backend without them is refused."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import PretrainedConfig

from sgl.runtime.executor.forward_batch import ForwardBatch
from sgl.runtime.layers.embedding import VocabParallelEmbedding
from sgl.runtime.layers.layernorm import GemmaRMSNorm
from sgl.runtime.models.llama import AttentionOptions, LlamaAttention, LlamaForCausalLM, LlamaMLP


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, config: PretrainedConfig, layer_id: int, options: AttentionOptions):
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_id, options)
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "gelu_pytorch_tanh")
        self.mlp = LlamaMLP(config.hidden_size, config.intermediate_size, act)
        eps = config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        attn = self.self_attn(positions, self.input_layernorm(hidden_states), forward_batch)
        hidden_states = hidden_states + self.post_attention_layernorm(attn)
        mlp = self.mlp(self.pre_feedforward_layernorm(hidden_states))
        return hidden_states + self.post_feedforward_layernorm(mlp)


class Gemma2Model(nn.Module):
    def __init__(self, config: PretrainedConfig, options: AttentionOptions):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Gemma2DecoderLayer(config, i, options) for i in range(config.num_hidden_layers))
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        if input_embeds is None:
            hidden_states = self.embed_tokens(input_ids)
            # the normalizer in the hidden dtype, as the checkpoints were trained (bf16: sqrt(3584) -> 60.0)
            hidden_states = hidden_states * torch.tensor(self.hidden_size**0.5, dtype=hidden_states.dtype)
        else:
            hidden_states = input_embeds
        for layer in self.layers:
            hidden_states = layer(positions, hidden_states, forward_batch)
        return self.norm(hidden_states)


class Gemma2ForCausalLM(LlamaForCausalLM):
    windowed = True
    model_cls = Gemma2Model


EntryClass = [Gemma2ForCausalLM]
