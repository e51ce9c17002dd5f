"""Qwen2 / Qwen2.5: the Llama decoder with biases on the q/k/v projections."""

from __future__ import annotations

from sgl.runtime.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Sliding-window attention (`use_sliding_window`, off in released Qwen2.5 configs) is not applied."""

    qkv_bias = True


EntryClass = [Qwen2ForCausalLM]
