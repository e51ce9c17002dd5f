"""Llama-family decoder (Llama 2 / 3 / 3.1 / 3.2, Mistral, SmolLM), and the parts Qwen2, Qwen3,
Phi-3 and Gemma 2 (`qwen2.py`, `qwen3.py`, `phi3.py`, `gemma2.py`) reuse: the attention block reads
per-family settings from the config (partial RoPE and LongRoPE, Gemma's `query_pre_attn_scalar` and
`attn_logit_softcapping`) and from `AttentionOptions` (q/k bias, per-head q/k norms, sliding windows).

Parameter names follow HF's except for the fused projections: q/k/v -> `qkv_proj`, gate/up ->
`gate_up_proj`; `load_weights` maps checkpoint names onto them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Set, Tuple

import torch
from torch import nn
from transformers import PretrainedConfig

from sgl.runtime.executor.forward_batch import ForwardBatch
from sgl.runtime.layers.activation import GATED_ACTIVATIONS
from sgl.runtime.layers.attention import RadixAttention
from sgl.runtime.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sgl.runtime.layers.layernorm import RMSNorm
from sgl.runtime.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear, default_weight_loader
from sgl.runtime.layers.logits import LogitsProcessor
from sgl.runtime.layers.rotary import rope_from_config

# (fused parameter, checkpoint name, shard id)
STACKED_PARAMS = (
    (".qkv_proj", ".q_proj", "q"),
    (".qkv_proj", ".k_proj", "k"),
    (".qkv_proj", ".v_proj", "v"),
    (".gate_up_proj", ".gate_proj", 0),
    (".gate_up_proj", ".up_proj", 1),
)
# checkpoint entries that are derived state, not weights
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


@dataclass(frozen=True)
class AttentionOptions:
    qkv_bias: bool = False
    qk_norm: bool = False  # Qwen3: an RMSNorm over each q and k head before RoPE
    windowed: bool = False  # honour `sliding_window` (see attention_window)


def attention_window(config: PretrainedConfig, layer_id: int) -> Optional[int]:
    """Keys a query of this layer sees (itself included), None for all: HF's rule, `sliding_window`
    on the layers `layer_types` marks "sliding_attention" (Gemma 2: the even ones; Qwen3 only with
    use_sliding_window), on every layer of a config without `layer_types` (Phi-3)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    if int(window) < 1:
        raise ValueError(f"sliding_window must be a positive number of tokens, got {window}")
    types = getattr(config, "layer_types", None)
    if types is not None and len(types) <= layer_id:
        raise ValueError(f"layer_types names {len(types)} layers, but the config has num_hidden_layers "
                         f"{config.num_hidden_layers}: give layer_types one entry per layer")
    return int(window) if types is None or types[layer_id] == "sliding_attention" else None


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu", bias: bool = False):
        super().__init__()
        if hidden_act not in GATED_ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; choose one of {sorted(GATED_ACTIVATIONS)}")
        self.gate_up_proj = MergedColumnParallelLinear(hidden_size, [intermediate_size] * 2, bias=bias)
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = GATED_ACTIVATIONS[hidden_act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class LlamaAttention(nn.Module):
    def __init__(self, config: PretrainedConfig, layer_id: int, options: AttentionOptions):
        super().__init__()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        self.head_dim = head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.qkv_proj = QKVParallelLinear(config.hidden_size, head_dim, heads, kv_heads, bias=options.qkv_bias)
        # under tensor parallelism the output projection reads the query heads this rank holds
        self.o_proj = RowParallelLinear(heads * head_dim, config.hidden_size, bias=False,
                                        input_part=self.qkv_proj.q_part)
        self.q_size, self.kv_size = self.qkv_proj.q_size, self.qkv_proj.kv_size
        self.rotary_emb = rope_from_config(config, head_dim)
        self.q_norm = RMSNorm(head_dim, config.rms_norm_eps) if options.qk_norm else None
        self.k_norm = RMSNorm(head_dim, config.rms_norm_eps) if options.qk_norm else None
        # Gemma scales scores by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5
        scaling = (getattr(config, "query_pre_attn_scalar", None) or head_dim) ** -0.5
        window = attention_window(config, layer_id) if options.windowed else None
        self.attn = RadixAttention(self.qkv_proj.num_heads, head_dim, scaling, self.qkv_proj.num_kv_heads, layer_id,
                                   logit_cap=getattr(config, "attn_logit_softcapping", None) or 0.0,
                                   sliding_window_size=window - 1 if window else -1)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden_states).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.q_norm is not None:
            q = self.q_norm(q.reshape(-1, self.head_dim)).view(q.shape)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view(k.shape)
        # a backend that applies RoPE itself (HiP) needs the keys un-rotated
        if not forward_batch.attn_backend.applies_rope:
            q, k = self.rotary_emb(positions, q, k)
        return self.o_proj(self.attn(q, k, v, forward_batch))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: PretrainedConfig, layer_id: int, options: AttentionOptions):
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_id, options)
        self.mlp = LlamaMLP(config.hidden_size, config.intermediate_size, getattr(config, "hidden_act", "silu"),
                            getattr(config, "mlp_bias", False))
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch,
                residual: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, hidden_states = hidden_states, self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, forward_batch)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class LlamaModel(nn.Module):
    def __init__(self, config: PretrainedConfig, options: AttentionOptions):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i, options) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, forward_batch, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class LlamaDecoderWeights:
    """What every model on this decoder shares (causal LMs here, the pooling models of
    llama_embedding.py): the decoder built from the class's options, and HF-named checkpoints
    loaded into its fused parameters."""

    #: None: take `config.attention_bias` (plain Llama has none; Qwen2 forces True)
    qkv_bias: Optional[bool] = None
    qk_norm = False
    #: whether `sliding_window` is applied (Llama, Mistral and Qwen2 keep full attention)
    windowed = False
    model_cls = LlamaModel
    #: a tied model has no lm_head of its own: a checkpoint's lm_head.weight is skipped
    tie_word_embeddings = False

    def build_decoder(self, config: PretrainedConfig, quant_config: object = None) -> nn.Module:
        if quant_config is not None:
            raise ValueError("quantized layers are not supported yet; pass quant_config=None")
        qkv_bias = self.qkv_bias if self.qkv_bias is not None else bool(getattr(config, "attention_bias", False))
        return self.model_cls(config, AttentionOptions(qkv_bias, self.qk_norm, self.windowed))

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> Set[str]:
        """Copy HF-named checkpoint tensors into the (fused) parameters; returns the parameter
        names that received data. ValueError on names the model does not have."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded: Set[str] = set()
        for name, tensor in weights:
            if name.endswith(IGNORED_SUFFIXES) or (self.tie_word_embeddings and name == "lm_head.weight"):
                continue
            for param_name, part, shard_id in self.checkpoint_parts(name, tensor):
                if param_name not in params:
                    raise ValueError(f"checkpoint tensor {name!r} has no matching parameter in {type(self).__name__}")
                param = params[param_name]
                getattr(param, "weight_loader", default_weight_loader)(param, part, shard_id)
                loaded.add(param_name)
        return loaded

    def checkpoint_parts(self, name: str, tensor: torch.Tensor) -> Iterator[Tuple[str, torch.Tensor, object]]:
        """(parameter name, tensor, shard id) for one checkpoint tensor: separate q/k/v and gate/up
        projections go to their shard of the fused parameter."""
        param_name, shard_id = _fused_name(name)
        yield param_name, tensor, shard_id


class LlamaForCausalLM(LlamaDecoderWeights, nn.Module):
    def __init__(self, config: PretrainedConfig, quant_config: object = None):
        super().__init__()
        self.config = config
        self.model = self.build_decoder(config, quant_config)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        # tied: the same module, so device/dtype moves keep a single tensor
        self.lm_head = self.model.embed_tokens if self.tie_word_embeddings else ParallelLMHead(config.vocab_size, config.hidden_size)
        self.logits_processor = LogitsProcessor(config.vocab_size,
                                                final_logit_softcapping=getattr(config, "final_logit_softcapping", None))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids, positions [T] -> final-normed hidden states [T, hidden]."""
        return self.model(input_ids, positions, forward_batch, input_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> float32 logits [N, vocab]."""
        return self.logits_processor(hidden_states, self.lm_head)



def _fused_name(name: str) -> Tuple[str, object]:
    for fused, part, shard_id in STACKED_PARAMS:
        if part in name:
            return name.replace(part, fused), shard_id
    return name, None


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral is the Llama architecture (sliding-window attention is not applied)."""


EntryClass = [LlamaForCausalLM, MistralForCausalLM]
