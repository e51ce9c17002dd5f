"""Layer unit tests against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgltest.model_testing import neox_rotate
from sgl.runtime.layers.activation import SiluAndMul
from sgl.runtime.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sgl.runtime.layers.layernorm import RMSNorm
from sgl.runtime.layers.linear import (ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear,
                                       RowParallelLinear)
from sgl.runtime.layers.logits import LogitsProcessor
from sgl.runtime.layers.rotary import RotaryEmbedding, get_rope, rope_from_config, rope_params
from sgl.runtime.models.gguf_weights import gguf_to_hf_name, reverse_permute

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def llama3_reference(head_dim: int, base: float, s: dict) -> list:
    """Meta's published llama3 frequency rule, one frequency at a time."""
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
        high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
            out.append((1 - smooth) * freq / s["factor"] + smooth * freq)
    return out


def test_llama3_frequencies_match_reference_and_hf():
    rope = RotaryEmbedding(128, 128, 131072, 500000.0, LLAMA3_SCALING)
    ours = rope.inv_freq(torch.device("cpu")).double()
    expected = torch.tensor(llama3_reference(128, 500000.0, LLAMA3_SCALING), dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    assert (ours < torch.tensor(llama3_reference(128, 500000.0, {**LLAMA3_SCALING, "factor": 1.0}))).any()

    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, head_dim=128, rope_theta=500000.0,
                         rope_scaling=dict(LLAMA3_SCALING), max_position_embeddings=131072)
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    torch.testing.assert_close(ours.float(), hf_inv_freq.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("max_position,long", [(131072, True), (4096, False)])
def test_longrope_frequencies_and_mscale_match_hf(max_position, long):
    """Phi-3 128k's LongRoPE, partial rotation: the long factors when the window passes the original
    one (HF's choice for a sequence that long), else the short ones; cos/sin scaled by HF's factor."""
    from transformers import Phi3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    gen = torch.Generator().manual_seed(0)
    scaling = {"type": "su", "short_factor": (1 + torch.rand(24, generator=gen)).tolist(),
               "long_factor": (1 + 9 * torch.rand(24, generator=gen)).tolist()}
    config = Phi3Config(hidden_size=3072, num_attention_heads=32, max_position_embeddings=max_position,
                        original_max_position_embeddings=4096, rope_scaling=scaling, partial_rotary_factor=0.5)
    rope = rope_from_config(config, 96)
    assert (rope.head_size, rope.rotary_dim) == (96, 48)
    hf_inv_freq, hf_mscale = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=4097 if long else None)
    torch.testing.assert_close(rope.inv_freq(torch.device("cpu")).float(), hf_inv_freq.float(), rtol=1e-6, atol=0)
    assert rope.mscale == pytest.approx(hf_mscale) and (rope.mscale > 1) == long
    cos, _ = rope.cos_sin(torch.tensor([0]))
    assert cos[0, 0].item() == pytest.approx(hf_mscale)
    with pytest.raises(ValueError, match="long_factor"):
        get_rope(96, 48, 131072, 1e4, {"rope_type": "longrope", "short_factor": [1.0] * 24,
                                       "original_max_position_embeddings": 4096})


def test_rope_rotation_matches_rotate_half_form():
    torch.manual_seed(0)
    head_dim, positions = 64, torch.tensor([0, 1, 5, 300, 8000])
    q, k = torch.randn(5, 4 * head_dim), torch.randn(5, 2 * head_dim)
    rope = RotaryEmbedding(head_dim, head_dim, 8192, 10000.0)
    q_rot, k_rot = rope(positions, q, k)
    inv_freq = rope.inv_freq(torch.device("cpu"))
    torch.testing.assert_close(q_rot, neox_rotate(q, positions, inv_freq, head_dim), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_rot, neox_rotate(k, positions, inv_freq, head_dim), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_rot[0], q[0])  # position 0 is the identity


def test_rope_cos_sin_reused_only_for_the_same_unchanged_positions():
    """Every layer of a forward passes one positions tensor: cos/sin are computed once for it, and
    again for another tensor, after an in-place update, and (uncached) for an inference tensor."""
    torch.manual_seed(1)
    head_dim = 64
    rope = RotaryEmbedding(head_dim, head_dim, 8192, 10000.0)
    inv_freq = rope.inv_freq(torch.device("cpu"))
    q, k = torch.randn(3, 2 * head_dim), torch.randn(3, head_dim)
    calls = []
    real = rope.cos_sin
    rope.cos_sin = lambda p: calls.append(p) or real(p)

    def check(positions):
        q_rot, k_rot = rope(positions, q, k)
        torch.testing.assert_close(q_rot, neox_rotate(q, positions, inv_freq, head_dim), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k_rot, neox_rotate(k, positions, inv_freq, head_dim), rtol=1e-5, atol=1e-5)

    positions = torch.tensor([3, 9, 4000])
    check(positions)
    check(positions)
    assert len(calls) == 1
    positions.add_(5)  # a static buffer updated in place
    check(positions)
    assert len(calls) == 2
    check(torch.tensor([3, 9, 4000]))
    assert len(calls) == 3
    with torch.inference_mode():
        frozen = torch.tensor([1, 2, 3])
    check(frozen)
    check(frozen)
    assert len(calls) == 5


def test_partial_rotary_leaves_tail_channels():
    q, k = torch.randn(3, 2 * 64), torch.randn(3, 64)
    q_rot, _ = RotaryEmbedding(64, 32, 128, 10000.0)(torch.tensor([1, 2, 3]), q, k)
    heads, rot_heads = q.view(3, 2, 64), q_rot.view(3, 2, 64)
    torch.testing.assert_close(rot_heads[..., 32:], heads[..., 32:])
    assert not torch.allclose(rot_heads[..., :32], heads[..., :32])


def test_rope_keeps_bf16_dtype_and_is_accurate():
    q, k = torch.randn(4, 128), torch.randn(4, 128)
    rope = RotaryEmbedding(128, 128, 1 << 20, 500000.0)
    positions = torch.tensor([0, 1000, 100_000, 1_000_000])
    q16, _ = rope(positions, q.bfloat16(), k.bfloat16())
    q32, _ = rope(positions, q, k)
    assert q16.dtype == torch.bfloat16
    torch.testing.assert_close(q16.float(), q32, rtol=2e-2, atol=2e-2)


def test_freq_factors_reproduce_llama3_scaling():
    plain = RotaryEmbedding(64, 64, 8192, 500000.0).inv_freq(torch.device("cpu")).double()
    scaled = RotaryEmbedding(64, 64, 8192, 500000.0, LLAMA3_SCALING).inv_freq(torch.device("cpu")).double()
    via_factors = RotaryEmbedding(64, 64, 8192, 500000.0, freq_factors=(plain / scaled).tolist())
    torch.testing.assert_close(via_factors.inv_freq(torch.device("cpu")), scaled, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="freq_factors"):
        RotaryEmbedding(64, 64, 8192, 500000.0, freq_factors=[1.0, 2.0])


def test_get_rope_shares_instances_and_rejects_unknown_scaling():
    a = get_rope(64, 64, 4096, 10000.0, dict(LLAMA3_SCALING))
    assert get_rope(64, 64, 4096, 10000.0, {**LLAMA3_SCALING, "rope_theta": 10000.0}) is a
    assert get_rope(64, 64, 4096, 20000.0, dict(LLAMA3_SCALING)) is not a
    with pytest.raises(ValueError, match="yarn"):
        get_rope(64, 64, 4096, 10000.0, {"rope_type": "yarn", "factor": 4.0})


def test_rope_params_reads_both_config_styles():
    from transformers import LlamaConfig

    config = LlamaConfig(rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING))
    theta, scaling = rope_params(config)
    assert theta == 500000.0 and scaling["rope_type"] == "llama3" and scaling["factor"] == 8.0

    class Old:  # transformers 4 style attributes
        rope_theta = 1e6
        rope_scaling = None

    assert rope_params(Old()) == (1e6, None)


def test_rmsnorm_matches_formula_and_fuses_residual():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x, residual = torch.randn(5, 16), torch.randn(5, 16)
    expected = norm.weight * x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x), expected)
    out, new_residual = norm(x, residual)
    torch.testing.assert_close(new_residual, x + residual)
    torch.testing.assert_close(out, norm(x + residual))


def test_silu_and_mul():
    x = torch.randn(3, 8)
    torch.testing.assert_close(SiluAndMul()(x), F.silu(x[:, :4]) * x[:, 4:])
    with pytest.raises(ValueError):
        SiluAndMul()(torch.randn(2, 3))


def _load(layer, weight, bias=None, shard=None):
    layer.weight_loader(layer.weight, weight, shard)
    if bias is not None:
        layer.weight_loader(layer.bias, bias, shard)


@pytest.mark.parametrize("tp_size", [1, 2, 4])
def test_qkv_loader_places_head_slices(tp_size):
    torch.manual_seed(0)
    hidden, head, heads, kv_heads = 32, 8, 8, 2
    full = {s: torch.randn(n * head, hidden) for s, n in (("q", heads), ("k", kv_heads), ("v", kv_heads))}
    bias = {s: torch.randn(w.shape[0]) for s, w in full.items()}
    x = torch.randn(3, hidden)
    for rank in range(tp_size):
        layer = QKVParallelLinear(hidden, head, heads, kv_heads, bias=True, tp_rank=rank, tp_size=tp_size)
        for shard in "qkv":
            _load(layer, full[shard], bias[shard], shard)
        q, k, v = layer(x).split([layer.q_size, layer.kv_size, layer.kv_size], dim=-1)
        kv_head = rank * kv_heads // tp_size  # KV heads replicate when tp_size > kv_heads
        q_rows = slice(rank * layer.q_size, (rank + 1) * layer.q_size)
        kv_rows = slice(kv_head * head, kv_head * head + layer.kv_size)
        torch.testing.assert_close(q, F.linear(x, full["q"][q_rows], bias["q"][q_rows]))
        torch.testing.assert_close(k, F.linear(x, full["k"][kv_rows], bias["k"][kv_rows]))
        torch.testing.assert_close(v, F.linear(x, full["v"][kv_rows], bias["v"][kv_rows]))
    with pytest.raises(ValueError, match="shard_id"):
        layer.weight_loader(layer.weight, full["q"], "x")


def test_merged_column_loader_places_gate_and_up():
    gate, up, x = torch.randn(6, 4), torch.randn(6, 4), torch.randn(2, 4)
    for rank in range(2):
        layer = MergedColumnParallelLinear(4, [6, 6], bias=False, tp_rank=rank, tp_size=2)
        _load(layer, gate, shard=0)
        _load(layer, up, shard=1)
        out = layer(x)
        torch.testing.assert_close(out, torch.cat([F.linear(x, gate[rank * 3 : rank * 3 + 3]), F.linear(x, up[rank * 3 : rank * 3 + 3])], -1))
    with pytest.raises(ValueError, match="shape mismatch"):
        layer.weight_loader(layer.weight, torch.randn(4, 4), 0)


def test_column_and_row_parallel_recombine_to_full_linear():
    torch.manual_seed(0)
    w1, b1, w2, b2 = torch.randn(8, 6), torch.randn(8), torch.randn(5, 8), torch.randn(5)
    x = torch.randn(3, 6)
    parts = []
    for rank in range(2):
        col = ColumnParallelLinear(6, 8, bias=True, tp_rank=rank, tp_size=2)
        row = RowParallelLinear(8, 5, bias=True, reduce_results=False, tp_rank=rank, tp_size=2)
        _load(col, w1, b1)
        _load(row, w2, b2)
        parts.append(row(col(x)))
    # the partial sums must add up to the unsplit MLP, with the bias counted once
    torch.testing.assert_close(parts[0] + parts[1], F.linear(F.linear(x, w1, b1), w2, b2))


def test_linear_rejects_bad_partitioning():
    with pytest.raises(ValueError, match="divisible"):
        ColumnParallelLinear(4, 6, tp_rank=0, tp_size=4)
    with pytest.raises(ValueError, match="tp_rank"):
        RowParallelLinear(4, 4, tp_rank=2, tp_size=2)


def test_vocab_parallel_embedding_split_and_padding():
    weight = torch.randn(10, 4)
    rows = []
    for rank in range(3):
        emb = VocabParallelEmbedding(10, 4, tp_rank=rank, tp_size=3)
        emb.weight_loader(emb.weight, weight)
        rows.append(emb.weight[: emb.vocab_end - emb.vocab_start])
        if rank == 2:
            assert emb.num_embeddings_per_partition == 4 and torch.all(emb.weight[2:] == 0)
    torch.testing.assert_close(torch.cat(rows), weight)
    emb = VocabParallelEmbedding(10, 4)
    emb.weight_loader(emb.weight, weight)
    torch.testing.assert_close(emb(torch.tensor([3, 0, 9])), weight[[3, 0, 9]])
    with pytest.raises(ValueError, match="rows"):
        emb.weight_loader(emb.weight, torch.randn(11, 4))


def test_logits_processor_float32_and_lm_head_guard():
    head = ParallelLMHead(7, 4)
    head.weight_loader(head.weight, torch.randn(7, 4))
    hidden = torch.randn(3, 4).bfloat16()
    head = head.bfloat16()
    logits = LogitsProcessor(7)(hidden, head)
    assert logits.dtype == torch.float32 and logits.shape == (3, 7)
    torch.testing.assert_close(logits, (hidden.float() @ head.weight.float().t()), rtol=2e-2, atol=2e-2)
    with pytest.raises(RuntimeError):
        head(torch.tensor([1]))
    with pytest.raises(ValueError):
        LogitsProcessor(7)(torch.randn(2, 3, 4), head)


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's q/k permutation, written from its definition."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@pytest.mark.parametrize("shape,heads", [((12 * 8, 5), 12), ((3 * 8, 5), 3), ((4 * 6,), 4)])
def test_reverse_permute_inverts_llama_cpp(shape, heads):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    permuted = llama_cpp_permute(weight, heads)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(reverse_permute(permuted, heads), weight)


def test_gguf_names_map_to_hf():
    assert gguf_to_hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert gguf_to_hf_name("blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias"
    assert gguf_to_hf_name("blk.2.ffn_down.weight") == "model.layers.2.mlp.down_proj.weight"
    assert gguf_to_hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert gguf_to_hf_name("output_norm.weight") == "model.norm.weight"
    assert gguf_to_hf_name("output.weight") == "lm_head.weight"
    with pytest.raises(ValueError, match="blk.0.ssm_a"):
        gguf_to_hf_name("blk.0.ssm_a.weight")
