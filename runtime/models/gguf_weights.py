"""GGUF tensors as HF-named float32 torch tensors: dequantized, renamed, and with llama.cpp's q/k
permutation undone.

llama.cpp's converter reorders the rows of each Llama q/k head from HF's rotary layout (first
half / second half) to interleaved pairs, for its GPT-J style rope: a head's d rows viewed as
[2, d/2] are stored transposed, as [d/2, 2]. We transpose them back so our neox-style rotary
applies. Qwen2 GGUFs are written without this permutation.
"""

from __future__ import annotations

import re
from typing import Iterator, Tuple

import numpy as np
import torch
from transformers import PretrainedConfig

from sgl.runtime.models.gguf_file import gguf_field, open_gguf

_LAYER_PARTS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_PARTS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# consumed by the config (rope frequency divisors), not a module weight
_CONFIG_TENSORS = {"rope_freqs.weight"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^(\w+)\.(weight|bias)$")


def gguf_to_hf_name(name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; ValueError if unknown."""
    match = _LAYER_RE.match(name)
    if match and match.group(2) in _LAYER_PARTS:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{_LAYER_PARTS[part]}.{kind}"
    match = _TOP_RE.match(name)
    if match and match.group(1) in _TOP_PARTS:
        return f"{_TOP_PARTS[match.group(1)]}.{match.group(2)}"
    raise ValueError(f"GGUF tensor {name!r} has no known HF counterpart")


def reverse_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (works for weights [rows, in] and biases [rows])."""
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"cannot un-permute {rows} rows over {num_heads} heads")
    half = rows // num_heads // 2
    heads = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return heads.swapaxes(1, 2).reshape(weight.shape)


def gguf_tensor_count(path: str) -> int:
    return sum(1 for t in open_gguf(path).tensors if t.name not in _CONFIG_TENSORS)


def iterate_gguf_weights(path: str, config: PretrainedConfig) -> Iterator[Tuple[str, torch.Tensor]]:
    """Yield (hf_name, float32 tensor) for every weight tensor of the GGUF file."""
    from gguf.quants import dequantize

    reader = open_gguf(path)
    permuted = gguf_field(reader, "general.architecture") == "llama"
    for tensor in reader.tensors:
        if tensor.name in _CONFIG_TENSORS:
            continue
        hf_name = gguf_to_hf_name(tensor.name)
        shape = tuple(reversed([int(n) for n in tensor.shape]))  # GGUF lists dims innermost first
        array = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        if permuted:
            array = _unpermute_qk(array, hf_name, config)
        yield hf_name, _to_torch(array)


def _unpermute_qk(array: np.ndarray, hf_name: str, config: PretrainedConfig) -> np.ndarray:
    if ".self_attn.q_proj." in hf_name:
        return reverse_permute(array, config.num_attention_heads)
    if ".self_attn.k_proj." in hf_name:
        return reverse_permute(array, getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    return array


def _to_torch(array: np.ndarray) -> torch.Tensor:
    # unquantized tensors come back as read-only views of the memory-mapped file
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, dtype=np.float32)
    return torch.from_numpy(array.astype(np.float32, copy=False))
