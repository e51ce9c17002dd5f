"""GPU checks: dummy loading of a real-size config, and real weights in bf16 on CUDA vs HF on CPU."""

from __future__ import annotations

import time

import pytest
import torch

from sgltest.model_testing import run_logits
from sgl.runtime.models.model_config import ModelConfig
from sgl.runtime.models.loader import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_dummy_llama_8b_loads_fast_without_extra_copies():
    config = ModelConfig.load("llama-3.1-8b", "dummy", device="cuda")
    torch.cuda.synchronize()
    start_bytes = torch.cuda.memory_allocated()
    start = time.perf_counter()
    model = load_model(config, device="cuda")
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    assert 7.9e9 < n_params < 8.1e9
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    # parameters built in place: the allocation is the weights themselves, nothing twice
    assert torch.cuda.max_memory_allocated() - start_bytes < 1.05 * 2 * n_params
    assert elapsed < 30, f"dummy load took {elapsed:.1f}s"
    ids = [[1, 2, 3, 4, 5, 128000], [7, 8]]
    logits = run_logits(model, ids)
    assert logits.dtype == torch.float32 and logits.shape == (8, 128256)
    assert torch.isfinite(logits).all()
    print(f"llama-3.1-8b dummy load: {elapsed:.2f}s, {n_params / 1e9:.2f}B params")


def test_bf16_cuda_matches_hf_cpu(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=500, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = load_model(ModelConfig.load(str(tmp_path), device="cuda"), device="cuda")
    assert model.model.layers[0].mlp.gate_up_proj.weight.dtype == torch.float16  # fp32 checkpoint -> fp16
    seq = [3, 17, 256, 499, 42, 8, 100]
    ours = run_logits(model, [seq]).cpu()
    with torch.inference_mode():
        ref = hf(torch.tensor([seq])).logits[0]
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=2e-2)
