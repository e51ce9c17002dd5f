"""Rotary position embeddings (RoPE) with default, linear, llama3 and LongRoPE (Phi-3) frequency scaling.

cos/sin are computed from the positions on every call instead of read from a table sized
max_position: the cost is small next to attention, nothing breaks when the context length is
raised past the trained window, and no buffer is down-cast when a model changes dtype.
Angles are formed in float64: in float32, position * inv_freq loses ~1e-3 rad by position 8k and
~0.1 rad by 1M, which long contexts notice; the cost is a [T, rotary_dim/2] elementwise op.
"""

from __future__ import annotations

import json
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from sgl.kernels.utils import use_triton

LONGROPE_NAMES = ("longrope", "su")  # "su": the name of Phi-3's first configs


def default_inv_freq(rotary_dim: int, base: float) -> torch.Tensor:
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim
    return 1.0 / (base**exponents)


def llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = ((original / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, blended)
    return torch.where(wavelen < original / high, inv_freq, scaled)


def _longrope_field(scaling: dict, name: str):
    if scaling.get(name) is None:
        raise ValueError(f"longrope rope scaling needs the field {name!r}")
    return scaling[name]


def longrope_inv_freq(inv_freq: torch.Tensor, scaling: dict, max_position: int) -> torch.Tensor:
    """LongRoPE (Phi-3 "longrope", formerly "su"): each frequency divided by its own factor, the
    `long_factor`s when the model's window (max_position) is longer than the trained
    `original_max_position_embeddings`, else the `short_factor`s. HF switches per forward on the
    current length; here the choice is fixed per model, so a cached key keeps its rotation when
    its request grows past the original window (and the radix cache stays valid across requests)."""
    original = int(_longrope_field(scaling, "original_max_position_embeddings"))
    name = "long_factor" if max_position > original else "short_factor"
    return _divide_by_factors(inv_freq, _longrope_field(scaling, name), f"rope {name}")


def rope_mscale(rope_scaling: Optional[dict], max_position: int) -> float:
    """Factor on cos/sin (LongRoPE's attention factor: sqrt(1 + ln(s) / ln(original)) for the context
    extension s, unless the config gives `attention_factor`); 1 for the other scalings."""
    if rope_type(rope_scaling) not in LONGROPE_NAMES:
        return 1.0
    if rope_scaling.get("attention_factor") is not None:
        return float(rope_scaling["attention_factor"])
    original = int(_longrope_field(rope_scaling, "original_max_position_embeddings"))
    factor = float(rope_scaling.get("factor") or max_position / original)
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


def scaled_inv_freq(rotary_dim: int, base: float, rope_scaling: Optional[dict],
                    max_position: Optional[int] = None) -> torch.Tensor:
    inv_freq = default_inv_freq(rotary_dim, base)
    kind = rope_type(rope_scaling)
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if kind == "llama3":
        return llama3_inv_freq(inv_freq, rope_scaling)
    if kind in LONGROPE_NAMES:
        if max_position is None:
            raise ValueError("longrope rope scaling needs max_position (the model's max_position_embeddings)")
        return longrope_inv_freq(inv_freq, rope_scaling, max_position)
    raise ValueError(f"rope scaling type {kind!r} is not supported (supported: default, linear, llama3, longrope)")


def rope_type(rope_scaling: Optional[dict]) -> str:
    if not rope_scaling:
        return "default"
    return rope_scaling.get("rope_type") or rope_scaling.get("type") or "default"


class RotaryEmbedding(nn.Module):
    """Rotates the first `rotary_dim` channels of each head of flat q [T, H*D] and k [T, KVH*D]."""

    def __init__(self, head_size: int, rotary_dim: int, max_position: int, base: float,
                 rope_scaling: Optional[dict] = None, is_neox_style: bool = True,
                 freq_factors: Optional[Sequence[float]] = None):
        super().__init__()
        if rotary_dim > head_size or rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even and <= head_size {head_size}, got {rotary_dim}")
        self.head_size, self.rotary_dim = head_size, rotary_dim
        self.max_position, self.base, self.is_neox_style = max_position, base, is_neox_style
        inv_freq = scaled_inv_freq(rotary_dim, base, rope_scaling, max_position)
        self.mscale = rope_mscale(rope_scaling, max_position)
        if freq_factors is not None:
            inv_freq = _divide_by_factors(inv_freq, freq_factors)
        self._inv_freq: Dict[torch.device, torch.Tensor] = {torch.device("cpu"): inv_freq}
        # (positions, its version, cos, sin) of the last call: every layer of a forward passes the
        # same positions tensor, so the torch path computes cos/sin once per forward, not per layer
        self._last: Optional[tuple] = None

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """float64 inverse frequencies [rotary_dim // 2] on `device`."""
        # kept out of the module's buffers so `.to(dtype)` can never round it; copied per device once
        if device not in self._inv_freq:
            self._inv_freq[device] = self._inv_freq[torch.device("cpu")].to(device)
        return self._inv_freq[device]

    def cos_sin(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [T, rotary_dim // 2], float32 (times `mscale`)."""
        angles = positions.double().unsqueeze(-1) * self.inv_freq(positions.device)
        if self.mscale != 1.0:
            return (angles.cos() * self.mscale).float(), (angles.sin() * self.mscale).float()
        return angles.cos().float(), angles.sin().float()

    def forward(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # one launch for q and k on GPUs (the kernel has no cos/sin factor); the torch path is the reference
        if use_triton(query) and self.mscale == 1.0:
            from sgl.kernels.rope import apply_rope

            return apply_rope(positions, query, key, self.inv_freq(positions.device), self.head_size, self.is_neox_style)
        cos, sin = self._cos_sin_cached(positions)
        if self.rotary_dim == self.head_size and query.dtype == key.dtype:
            # q and k rotated in one pass (one set of elementwise ops for both)
            tokens, q_width = query.shape[0], query.reshape(query.shape[0], -1).shape[1]
            both = self._rotate(torch.cat((query.reshape(tokens, -1), key.reshape(tokens, -1)), dim=-1), cos, sin)
            return both[:, :q_width].reshape(query.shape), both[:, q_width:].reshape(key.shape)
        return self._rotate(query, cos, sin), self._rotate(key, cos, sin)

    def _cos_sin_cached(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if positions.is_inference():  # no version counter to tell an in-place update: not cached
            return self.cos_sin(positions)
        last = self._last
        if last is not None and last[0] is positions and last[1] == positions._version:
            return last[2], last[3]
        cos, sin = self.cos_sin(positions)
        self._last = (positions, positions._version, cos, sin)
        return cos, sin

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        heads = x.reshape(x.shape[0], -1, self.head_size)
        rot = heads[..., : self.rotary_dim].float()
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        if self.is_neox_style:
            x1, x2 = rot.chunk(2, dim=-1)
            rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        else:  # GPT-J style: channel pairs (0,1), (2,3), ...
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        if self.rotary_dim == self.head_size:
            return rotated.to(x.dtype).reshape(x.shape)
        out = torch.cat((rotated.to(x.dtype), heads[..., self.rotary_dim :]), dim=-1)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"head_size={self.head_size}, rotary_dim={self.rotary_dim}, base={self.base}, "
                f"neox={self.is_neox_style}, mscale={self.mscale:g}")


def _divide_by_factors(inv_freq: torch.Tensor, freq_factors: Sequence[float], what: str = "rope freq_factors") -> torch.Tensor:
    factors = torch.tensor(list(freq_factors), dtype=torch.float64)
    if factors.shape != inv_freq.shape:
        raise ValueError(f"{what} must have {inv_freq.numel()} entries, got {factors.numel()}")
    return inv_freq / factors


_ROPE_CACHE: Dict[str, RotaryEmbedding] = {}


def get_rope(head_size: int, rotary_dim: int, max_position: int, base: float, rope_scaling: Optional[dict] = None,
             is_neox_style: bool = True, freq_factors: Optional[Sequence[float]] = None) -> RotaryEmbedding:
    """A RotaryEmbedding shared by every layer (and model) asking for the same settings."""
    key = json.dumps([head_size, rotary_dim, max_position, base, _scaling_key(rope_scaling), is_neox_style,
                      list(freq_factors) if freq_factors is not None else None])
    if key not in _ROPE_CACHE:
        _ROPE_CACHE[key] = RotaryEmbedding(head_size, rotary_dim, max_position, base, rope_scaling, is_neox_style, freq_factors)
    return _ROPE_CACHE[key]


def _scaling_key(rope_scaling: Optional[dict]) -> Optional[dict]:
    # HF (v5) folds rope_theta into the same dict; only the scaling fields identify a rope
    if rope_type(rope_scaling) == "default":
        return None
    return {k: v for k, v in sorted(rope_scaling.items()) if k != "rope_theta"}


def rope_params(config) -> Tuple[float, Optional[dict]]:
    """(rope theta, scaling dict or None) from a HF config of either style: transformers 4
    (`rope_theta` + `rope_scaling`) or 5 (`rope_parameters`, which also holds the theta)."""
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or params
    theta = getattr(config, "rope_theta", None) or params.get("rope_theta") or 10000.0
    return float(theta), (dict(scaling) if rope_type(scaling) != "default" else None)


def rope_from_config(config, head_dim: int) -> RotaryEmbedding:
    """The model's shared RotaryEmbedding: theta and scaling from `rope_params`, partial rotation
    (`partial_rotary_factor`, Phi-3 style: the first fraction of each head's channels) and GGUF
    frequency factors."""
    theta, scaling = rope_params(config)
    params = getattr(config, "rope_parameters", None) or {}
    partial = getattr(config, "partial_rotary_factor", None) or params.get("partial_rotary_factor") or 1.0
    if not 0 < float(partial) <= 1:
        raise ValueError(f"partial_rotary_factor must be in (0, 1], got {partial}")
    if rope_type(scaling) in LONGROPE_NAMES and scaling.get("original_max_position_embeddings") is None:
        # transformers 4 kept it beside rope_scaling, at the top of the config
        scaling["original_max_position_embeddings"] = getattr(config, "original_max_position_embeddings", None)
    return get_rope(head_dim, int(head_dim * float(partial)), config.max_position_embeddings, theta, scaling,
                    freq_factors=getattr(config, "rope_freq_factors", None))
