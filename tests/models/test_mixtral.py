"""Mixtral (sparse MoE) on a tiny random HF checkpoint: prefill logits and greedy decoding through
the scheduler equal transformers'; the shipped mixtral-8x7b config builds (shrunk) with dummy
weights; the torch MoE path equals a dense evaluation of every expert."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import MixtralConfig
from transformers import MixtralForCausalLM as HFMixtral

from sgltest.model_testing import run_logits
from sgltest.runtime_helpers import run_all, submit
from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.layers.moe import FusedMoE, select_experts
from sgl.runtime.models.loader import load_model
from sgl.runtime.models.model_config import ModelConfig
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=1e6, tie_word_embeddings=False)
SEQS = [[5, 17, 42, 99, 3, 250, 7], [1, 2, 3], [200]]


@pytest.fixture(scope="module")
def hf_mixtral(tmp_path_factory):
    torch.manual_seed(0)
    model = HFMixtral(MixtralConfig(**TINY)).float().eval()
    path = str(tmp_path_factory.mktemp("mixtral"))
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def test_prefill_logits_match_hf(hf_mixtral):
    hf, path = hf_mixtral
    ours = load_model(ModelConfig.load(path, "safetensors", device="cpu", dtype="float32"), device="cpu")
    assert type(ours).__name__ == "MixtralForCausalLM"
    with torch.inference_mode():
        expected = torch.cat([hf(torch.tensor([s])).logits[0].float() for s in SEQS])
    torch.testing.assert_close(run_logits(ours, SEQS), expected, rtol=1e-4, atol=1e-4)
    # transformers' in-memory names (stacked experts, `mlp.gate`) load into the same weights
    again = load_model(ModelConfig.load(path, "dummy", device="cpu", dtype="float32"), device="cpu")
    again.load_weights(hf.state_dict().items())
    torch.testing.assert_close(run_logits(again, SEQS), expected, rtol=1e-4, atol=1e-4)


def test_missing_expert_weight_is_an_error(hf_mixtral, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = hf_mixtral
    tensors = load_file(f"{path}/model.safetensors")
    tensors.pop("model.layers.1.block_sparse_moe.experts.2.w3.weight")
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(open(f"{path}/config.json").read())
    with pytest.raises(ValueError, match="model.layers.1.mlp.experts.w13_weight"):
        load_model(ModelConfig.load(str(tmp_path), "safetensors", device="cpu", dtype="float32"))


def test_greedy_decode_matches_hf(hf_mixtral):
    hf, path = hf_mixtral
    sa = ServerArgs(model_path=path, load_format="safetensors", skip_tokenizer_init=True, dtype="float32", device="cpu",
                    attention_backend="torch_native", log_level="error", max_total_tokens=512, random_seed=0)
    sched = Scheduler(sa, model_runner=ModelRunner(sa))
    for i, ids in enumerate(SEQS):
        submit(sched, None, f"r{i}", ids, max_new_tokens=8, temperature=0, ignore_eos=True)
    results = run_all(sched)
    for i, ids in enumerate(SEQS):
        with torch.inference_mode():
            want = hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                               pad_token_id=0)[0, len(ids):].tolist()
        assert len(want) == 8 and results[f"r{i}"]["ids"] == want


def test_builtin_config_and_dummy_construction():
    config = ModelConfig.load("mixtral-8x7b", "dummy", device="cpu")
    hf = config.hf_config
    assert (config.architecture, config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == \
        ("MixtralForCausalLM", 4096, 32, 8)
    assert (hf.num_local_experts, hf.num_experts_per_tok, hf.intermediate_size, config.vocab_size) == (8, 2, 14336, 32000)
    assert config.context_len == 32768 and hf.sliding_window is None
    small = json.dumps(dict(num_hidden_layers=2, hidden_size=64, intermediate_size=32, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=256))
    model = load_model(ModelConfig.load("mixtral-8x7b", "dummy", json_override=small, device="cpu", dtype="float32"))
    assert tuple(model.model.layers[0].mlp.experts.w13_weight.shape) == (8, 64, 64)
    logits = run_logits(model, SEQS[:2])
    assert torch.isfinite(logits).all() and logits.std() > 0


def test_sliding_window_is_refused():
    window = json.dumps({"sliding_window": 4096})
    with pytest.raises(ValueError, match="sliding_window 4096 is not supported for Mixtral"):
        load_model(ModelConfig.load("mixtral-8x7b", "dummy", json_override=window, device="cpu"), device="meta")


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
