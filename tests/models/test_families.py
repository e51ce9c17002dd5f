"""Qwen3, Phi-3, Gemma 2 and Mixtral against HF transformers on tiny random float32 checkpoints: logits of a
prefill, of a prefill over a cached prefix and of decode steps through the torch-native backend and
a real KV pool, and greedy decoding through the scheduler; plus the built-in configs with dummy weights."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from sgltest.model_testing import CachedSequence
from sgltest.runtime_helpers import run_all, submit
from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.layers.attention import RadixAttention, check_backend_supports
from sgl.runtime.models.loader import load_model
from sgl.runtime.models.model_config import ModelConfig
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
PROMPTS = [[5, 17, 42, 99, 3, 250, 7, 64, 11, 12, 200, 31, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [300, 9, 77]]
NEW_TOKENS = 8


def _longrope(rotary_half: int, gen: torch.Generator) -> dict:
    return {"rope_type": "longrope", "short_factor": (1 + torch.rand(rotary_half, generator=gen)).tolist(),
            "long_factor": (1 + 4 * torch.rand(rotary_half, generator=gen)).tolist()}


def _configs():
    gen = torch.Generator().manual_seed(0)
    return {
        # head_dim 32 is not hidden / heads: it must come from the config
        "qwen3": transformers.Qwen3Config(**BASE, head_dim=32, rope_theta=1e6, tie_word_embeddings=False),
        # use_sliding_window: HF windows the layers from max_window_layers on
        "qwen3-window": transformers.Qwen3Config(**BASE, use_sliding_window=True, sliding_window=4, max_window_layers=1),
        "phi3": transformers.Phi3Config(**BASE, rope_theta=1e4, partial_rotary_factor=0.5, tie_word_embeddings=False,
                                        pad_token_id=0),
        # LongRoPE with the long factors: the window (256) passes the original one (2), and so do all prompts
        "phi3-longrope": transformers.Phi3Config(**BASE, partial_rotary_factor=0.5, original_max_position_embeddings=2,
                                                 rope_scaling=_longrope(4, gen), sliding_window=6, pad_token_id=0),
        # the short factors: the window fits the original one
        "phi3-shortrope": transformers.Phi3Config(**{**BASE, "max_position_embeddings": 64}, pad_token_id=0,
                                                  original_max_position_embeddings=64, rope_scaling=_longrope(8, gen)),
        # the window (5) shorter than the prompts; caps small enough to bind (checked below)
        "gemma2": transformers.Gemma2Config(**BASE, head_dim=32, query_pre_attn_scalar=24, sliding_window=5,
                                            attn_logit_softcapping=3.0, final_logit_softcapping=4.0),
        # 4 experts, top-2 (the sparse MoE of layers/moe.py), and a window shorter than the prompts on every layer
        "mixtral": transformers.MixtralConfig(**BASE, num_local_experts=4, num_experts_per_tok=2, sliding_window=5,
                                              rope_theta=1e6, tie_word_embeddings=False),
    }


CONFIGS = _configs()
HF_CLASSES = {"qwen3": transformers.Qwen3ForCausalLM, "phi3": transformers.Phi3ForCausalLM,
              "gemma2": transformers.Gemma2ForCausalLM, "mixtral": transformers.MixtralForCausalLM}


def _hf_model(name: str):
    config = CONFIGS[name]
    config._attn_implementation = "eager"  # HF's eager path is the one with soft-capping
    torch.manual_seed(0)
    model = HF_CLASSES[name.split("-")[0]](config).eval()
    with torch.no_grad():  # HF's init leaves norms at 1 (0 for Gemma) and biases at 0, hiding unloaded ones
        for pname, param in model.named_parameters():
            param.normal_(0.0, 0.3 if "norm" in pname else 0.15)
    return model


def _load_ours(hf, path) -> torch.nn.Module:
    """Our model from the HF model's safetensors checkpoint written to `path` (HF names through load_weights)."""
    hf.save_pretrained(path, safe_serialization=True)
    return load_model(ModelConfig.load(str(path), device="cpu", dtype="float32"), device="cpu")


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def family(request, tmp_path_factory):
    """(name, HF model, our model loaded from its safetensors checkpoint, its directory)."""
    hf = _hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    return request.param, hf, _load_ours(hf, path), str(path)


def hf_logits(hf, ids):
    with torch.inference_mode():
        return hf(torch.tensor([ids])).logits[0].float()


def hf_greedy(hf, ids, n=NEW_TOKENS):
    out = list(ids)
    for _ in range(n):  # full recompute: no HF cache semantics involved
        out.append(int(hf_logits(hf, out)[-1].argmax()))
    return out[len(ids):]


def cached(ours) -> CachedSequence:
    c = ours.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return CachedSequence(ours, c.num_key_value_heads, head_dim, c.num_hidden_layers)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_prefill_logits_match_hf(family):
    name, hf, ours, _ = family
    assert type(ours).__name__ == type(hf).__name__
    for ids in PROMPTS:
        close(cached(ours).extend(ids), hf_logits(hf, ids))


def test_cached_prefix_and_decode_logits_match_hf(family):
    name, hf, ours, _ = family
    ids = PROMPTS[0]
    expected = hf_logits(hf, ids)
    seq = cached(ours)
    close(seq.extend(ids[:4]), expected[:4])
    close(seq.extend(ids[4:9]), expected[4:9])  # over a cached prefix longer than Gemma's window
    for i in range(9, len(ids)):
        close(seq.decode(ids[i]), expected[i : i + 1])


def test_greedy_decode_through_scheduler_matches_hf(family):
    name, hf, ours, path = family
    sa = ServerArgs(model_path=path, attention_backend="torch_native", device="cpu", dtype="float32",
                    max_total_tokens=1024, log_level="error", random_seed=0, skip_tokenizer_init=True)
    sched = Scheduler(sa, model_runner=ModelRunner(sa), tokenizer=None)
    for i, ids in enumerate(PROMPTS):
        submit(sched, None, f"r{i}", ids, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    results = run_all(sched)
    # a later request over the first one's cached prompt: an extend with a radix-cache prefix
    submit(sched, None, "again", PROMPTS[0] + [6, 7], max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    again = run_all(sched)["again"]
    assert again["out"].cached_tokens > 0
    for i, ids in enumerate(PROMPTS):
        assert results[f"r{i}"]["ids"] == hf_greedy(hf, ids), (name, i)
    assert again["ids"] == hf_greedy(hf, PROMPTS[0] + [6, 7])


def _layers(model):
    return [m for m in model.modules() if isinstance(m, RadixAttention)]


def test_gemma2_caps_and_window_bind(tmp_path):
    """The tiny Gemma 2's soft-caps and window change its logits (so the tests above would notice them
    ignored), and the window is on the even layers."""
    ours = _load_ours(_hf_model("gemma2"), tmp_path)
    assert [layer.sliding_window_size for layer in _layers(ours)] == [4, -1]
    assert all(layer.logit_cap == 3.0 for layer in _layers(ours))
    ids = PROMPTS[0]
    reference = cached(ours).extend(ids)
    for attr, off in (("logit_cap", 0.0), ("sliding_window_size", -1)):
        saved = [getattr(layer, attr) for layer in _layers(ours)]
        for layer in _layers(ours):
            setattr(layer, attr, off)
        assert (cached(ours).extend(ids) - reference).abs().max() > 1e-2, attr
        for layer, value in zip(_layers(ours), saved):
            setattr(layer, attr, value)
    ours.logits_processor.final_logit_softcapping = None
    assert (cached(ours).extend(ids) - reference).abs().max() > 1e-2
    assert reference.abs().max() < 4.0  # capped at final_logit_softcapping


def test_backend_without_variants_is_refused(tmp_path):
    ours = _load_ours(_hf_model("gemma2"), tmp_path)

    class Plain:
        supports_logit_cap = supports_sliding_window = False

    with pytest.raises(ValueError, match="--attention-backend hip .*soft-capping"):
        check_backend_supports(Plain(), ours, "hip")
    Plain.supports_logit_cap = True
    with pytest.raises(ValueError, match="--attention-backend hip .*sliding-window"):
        check_backend_supports(Plain(), ours, "hip")
    # the real HiP backend declares neither: the model runner refuses the model at start-up
    sa = ServerArgs(model_path=str(tmp_path), attention_backend="hip", device="cpu", dtype="float32",
                    max_total_tokens=256, log_level="error", skip_tokenizer_init=True)
    with pytest.raises(ValueError, match="--attention-backend hip does not implement"):
        ModelRunner(sa, model=ours)


SHRINK = {"num_hidden_layers": 2, "vocab_size": 1000}


@pytest.mark.parametrize("name,arch,dims", [
    ("qwen3-8b", "Qwen3ForCausalLM", (4096, 36, 32, 8, 128, 151936, 40960)),
    ("phi-3-mini-4k", "Phi3ForCausalLM", (3072, 32, 32, 32, 96, 32064, 4096)),
    ("gemma-2-9b", "Gemma2ForCausalLM", (3584, 42, 16, 8, 256, 256000, 8192)),
])
def test_builtin_configs_load_dummy(name, arch, dims):
    full = ModelConfig.load(name, "dummy", device="cpu")
    assert full.architecture == arch
    assert (full.hidden_size, full.num_hidden_layers, full.num_attention_heads, full.num_key_value_heads,
            full.head_dim, full.vocab_size, full.context_len) == dims
    # the real widths with two layers and a small vocabulary, so the weights fit a CPU test
    config = ModelConfig.load(name, "dummy", json_override=json.dumps(SHRINK), device="cpu", dtype="bfloat16")
    model = load_model(config)
    assert len(model.model.layers) == 2
    seq = CachedSequence(model, config.num_key_value_heads, config.head_dim, 2, dtype=torch.bfloat16)
    assert torch.isfinite(seq.extend([1, 2, 3, 999])).all() and torch.isfinite(seq.decode(5)).all()


def test_layer_types_shorter_than_the_layers_is_an_error():
    override = json.dumps({"num_hidden_layers": 50, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 64})
    config = ModelConfig.load("gemma-2-9b", "dummy", json_override=override, device="cpu")
    with pytest.raises(ValueError, match="layer_types"):
        load_model(config)


def test_gemma2_float32_checkpoint_serves_in_bf16_on_gpu():
    assert ModelConfig.load("gemma-2-9b", "dummy", device="cuda").dtype == torch.bfloat16
    assert ModelConfig.load("qwen3-8b", "dummy", device="cuda").dtype == torch.bfloat16
