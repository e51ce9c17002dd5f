"""Qwen3 (dense): the Llama decoder with an RMSNorm over each query and key head before RoPE,
`head_dim` from the config (not hidden / heads) and no q/k/v bias unless `attention_bias`."""

from __future__ import annotations

from sgl.runtime.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    """`sliding_window` applies where HF applies it (only with use_sliding_window, off in released configs)."""

    qk_norm = True
    windowed = True


EntryClass = [Qwen3ForCausalLM]
