"""Mixtral specifics (its prefill, cached-prefix, decode and greedy-scheduler checks against HF,
with a sliding window, are in test_families.py): checkpoints with transformers' stacked expert names,
an incomplete expert checkpoint, the window on every layer, the shipped mixtral-8x7b config with
dummy weights, and the torch MoE path against a dense evaluation of every expert."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import MixtralConfig
from transformers import MixtralForCausalLM as HFMixtral

from sgltest.model_testing import run_logits
from sgl.runtime.layers.attention import RadixAttention
from sgl.runtime.layers.moe import FusedMoE, select_experts
from sgl.runtime.models.loader import load_model
from sgl.runtime.models.model_config import ModelConfig

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=1e6, tie_word_embeddings=False)
SEQS = [[5, 17, 42, 99, 3, 250, 7], [1, 2, 3], [200]]


@pytest.fixture(scope="module")
def hf_mixtral(tmp_path_factory):
    torch.manual_seed(0)
    model = HFMixtral(MixtralConfig(**TINY)).float().eval()
    path = str(tmp_path_factory.mktemp("mixtral"))
    model.save_pretrained(path, safe_serialization=True)  # the checkpoint names: block_sparse_moe.experts.{e}.w1/w2/w3
    return model, path


def _load(path, fmt="safetensors"):
    return load_model(ModelConfig.load(path, fmt, device="cpu", dtype="float32"), device="cpu")


def test_checkpoint_and_stacked_names_match_hf(hf_mixtral):
    hf, path = hf_mixtral
    with torch.inference_mode():
        expected = torch.cat([hf(torch.tensor([s])).logits[0].float() for s in SEQS])
    torch.testing.assert_close(run_logits(_load(path), SEQS), expected, rtol=1e-4, atol=1e-4)
    # transformers' in-memory names (`mlp.gate`, stacked `mlp.experts.gate_up_proj` / `down_proj`)
    stacked = _load(path, "dummy")
    stacked.load_weights(hf.state_dict().items())
    torch.testing.assert_close(run_logits(stacked, SEQS), expected, rtol=1e-4, atol=1e-4)


def test_missing_expert_weight_is_an_error(hf_mixtral, tmp_path):
    _, path = hf_mixtral
    tensors = load_file(f"{path}/model.safetensors")
    tensors.pop("model.layers.1.block_sparse_moe.experts.2.w3.weight")
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(open(f"{path}/config.json").read())
    with pytest.raises(ValueError, match="model.layers.1.mlp.experts.w13_weight"):
        _load(str(tmp_path))


def test_sliding_window_on_every_layer():
    override = json.dumps(dict(num_hidden_layers=3, hidden_size=64, intermediate_size=32, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=256, sliding_window=4096))
    model = load_model(ModelConfig.load("mixtral-8x7b", "dummy", json_override=override, device="cpu", dtype="float32"))
    assert [m.sliding_window_size for m in model.modules() if isinstance(m, RadixAttention)] == [4095] * 3


def test_builtin_config_and_dummy_construction():
    config = ModelConfig.load("mixtral-8x7b", "dummy", device="cpu")
    hf = config.hf_config
    assert (config.architecture, config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == \
        ("MixtralForCausalLM", 4096, 32, 8)
    assert (hf.num_local_experts, hf.num_experts_per_tok, hf.intermediate_size, config.vocab_size) == (8, 2, 14336, 32000)
    assert config.context_len == 32768 and hf.sliding_window is None
    # shrunk widths: the real model's 47B parameters are not allocated
    small = json.dumps(dict(num_hidden_layers=2, hidden_size=64, intermediate_size=32, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=256))
    model = load_model(ModelConfig.load("mixtral-8x7b", "dummy", json_override=small, device="cpu", dtype="float32"))
    assert tuple(model.model.layers[0].mlp.experts.w13_weight.shape) == (8, 64, 64)
    assert all(m.sliding_window_size == -1 for m in model.modules() if isinstance(m, RadixAttention))
    logits = run_logits(model, SEQS[:2])
    assert torch.isfinite(logits).all() and logits.std() > 0


def test_moe_layer_equals_dense_mixture():
    gen = torch.Generator().manual_seed(3)
    layer = FusedMoE(num_experts=4, top_k=2, hidden_size=16, intermediate_size=8)
    for p in layer.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    x, logits = torch.randn(9, 16, generator=gen), torch.randn(9, 4, generator=gen)
    weights, ids = select_experts(logits, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(9))
    gate, up = torch.einsum("th,eih->tei", x, layer.w13_weight).chunk(2, dim=-1)
    every = torch.einsum("tei,ehi->teh", torch.nn.functional.silu(gate) * up, layer.w2_weight)  # [T, E, H]
    dense = torch.zeros(9, 4).scatter(1, ids, weights)
    torch.testing.assert_close(layer(x, logits), torch.einsum("te,teh->th", dense, every), rtol=1e-5, atol=1e-5)
