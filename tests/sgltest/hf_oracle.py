"""The end-to-end oracle: HF transformers on the default GGUF model, greedy, in float32 on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch

# Where ours and the reference first differ, the reference's best two logits must be this close.
NEAR_TIE = 0.05


def load_hf_gguf_model(gguf_path: str):
    """HF's model filled by transformers' own GGUF conversion (dequantization and q/k
    un-permutation); `from_pretrained(gguf_file=...)` would also need `accelerate`."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    directory, name = os.path.split(gguf_path)
    config = AutoConfig.from_pretrained(directory, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}
    return model.eval()


@dataclass
class GreedyRef:
    tokens: List[int]
    top2_gap: List[float]  # logit gap between the best and second-best token at each step


@torch.inference_mode()
def hf_greedy(model, input_ids: List[int], max_new_tokens: int) -> GreedyRef:
    """Greedy decoding with the KV cache; records the top-2 logit gap of every step."""
    out = model(torch.tensor([input_ids]), use_cache=True)
    past, tokens, gaps = out.past_key_values, [], []
    logits = out.logits[0, -1]
    for _ in range(max_new_tokens):
        top = torch.topk(logits.float(), 2)
        tokens.append(int(top.indices[0]))
        gaps.append(float(top.values[0] - top.values[1]))
        out = model(torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    return GreedyRef(tokens, gaps)


def assert_matches_reference(ours: List[int], ref: GreedyRef, label: str = "") -> None:
    """Token-for-token equality, except after a first difference at a reference near-tie."""
    n = min(len(ours), len(ref.tokens))
    for i in range(n):
        if ours[i] != ref.tokens[i]:
            assert ref.top2_gap[i] < NEAR_TIE, (
                f"{label}: first difference at token {i} (ours {ours[i]}, reference {ref.tokens[i]}) "
                f"where the reference's top-2 logit gap is {ref.top2_gap[i]:.4f}, not a near-tie"
            )
            return
    assert len(ours) == len(ref.tokens), f"{label}: length {len(ours)} != reference {len(ref.tokens)}"
