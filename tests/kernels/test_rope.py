"""RoPE vs the float64 oracle and the torch layer: llama3 scaling, far positions, both pairings."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import ulp_close
from sgl.kernels import reference as R
from sgl.kernels.rope import apply_rope
from sgl.runtime.layers.rotary import RotaryEmbedding, scaled_inv_freq

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
POSITIONS = [0, 1, 7, 8191, 100_003, 1_048_575]  # far positions: float32 angles would be off by ~0.1 rad


def _qkv(gen, device, dtype, t, heads, kv_heads, head_dim):
    widths = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    qkv = torch.randn(t, sum(widths), generator=gen).to(dtype).to(device)
    q, k, _ = qkv.split(widths, dim=-1)  # strided views, as the layer receives them
    return q, k


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("heads,kv_heads,head_dim,rotary_dim", [(4, 1, 64, 64), (6, 2, 80, 32)])
def test_rope_matches_oracle(device, gen, is_neox, heads, kv_heads, head_dim, rotary_dim):
    inv_freq = scaled_inv_freq(rotary_dim, 500000.0, LLAMA3).to(device)
    q, k = _qkv(gen, device, torch.float32, len(POSITIONS), heads, kv_heads, head_dim)
    pos = torch.tensor(POSITIONS, device=device)
    q_out, k_out = apply_rope(pos, q, k, inv_freq, head_dim, is_neox)
    q_ref, k_ref = R.rope_ref(pos, q, k, inv_freq, head_dim, is_neox)
    assert torch.allclose(q_out, q_ref, atol=2e-5) and torch.allclose(k_out, k_ref, atol=2e-5)
    assert q_out.is_contiguous() and torch.equal(q, q.clone())


def test_rope_agrees_with_torch_layer_bf16(device, gen):
    rope = RotaryEmbedding(128, 128, 131072, 500000.0, LLAMA3)
    q, k = _qkv(gen, device, torch.bfloat16, len(POSITIONS), 4, 2, 128)
    pos = torch.tensor(POSITIONS, device=device)
    q_out, k_out = apply_rope(pos, q, k, rope.inv_freq(pos.device), 128)
    q_want, k_want = rope(pos, q, k)
    assert ulp_close(q_out, q_want) and ulp_close(k_out, k_want)


def test_rope_rejects_bad_shapes(device):
    inv = torch.ones(8, dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match="token counts"):
        apply_rope(torch.zeros(2, dtype=torch.int64, device=device), torch.zeros(3, 32, device=device),
                   torch.zeros(3, 16, device=device), inv, 16)
    with pytest.raises(ValueError, match="rotary dim"):
        apply_rope(torch.zeros(3, dtype=torch.int64, device=device), torch.zeros(3, 32, device=device),
                   torch.zeros(3, 16, device=device), torch.ones(9, dtype=torch.float64, device=device), 16)
