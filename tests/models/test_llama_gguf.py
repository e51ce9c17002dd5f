"""The default model (SmolLM2-135M GGUF) against HF transformers loading the same file."""

from __future__ import annotations

import torch

from sgltest.model_testing import RotatingBackend, make_forward_batch, run_logits
from sgl.runtime.layers.logits import last_token_indices

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village,",
]


def hf_logits(hf_model, ids):
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0].float()


def test_logits_match_hf(smol_model, hf_smol_model, smol_tokenizer):
    for prompt in PROMPTS:
        ids = smol_tokenizer.encode(prompt)
        ours, ref = run_logits(smol_model, [ids]), hf_logits(hf_smol_model, ids)
        assert ours.dtype == torch.float32 and ours.shape == ref.shape
        scale = ref.abs().max().item()
        assert (ours - ref).abs().max().item() < 1e-3 * scale, prompt
        assert torch.equal(ours.argmax(-1), ref.argmax(-1)), prompt


def test_bf16_cpu_default_agrees_with_hf_float32(gguf_path, hf_smol_model, smol_tokenizer):
    """The dtype CPUs with native bf16 get by default: teacher-forced next-token argmax agrees with
    HF's float32 on nearly every position of a text (bf16 rounding flips only near-ties)."""
    from sgl.runtime.models.loader import load_model
    from sgl.runtime.models.model_config import ModelConfig

    model = load_model(ModelConfig.load(gguf_path, "gguf", device="cpu", dtype="bfloat16"), device="cpu")
    ids = smol_tokenizer.encode(" ".join(PROMPTS) + " The river ran past the old mill, and the miller's "
                                "daughter watched the boats go by every morning before school.")
    ours, ref = run_logits(model, [ids]), hf_logits(hf_smol_model, ids)
    assert next(model.parameters()).dtype == torch.bfloat16
    agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree


def test_greedy_decode_matches_hf(smol_model, hf_smol_model, smol_tokenizer, smol_config):
    chat = [{"role": "user", "content": "Write a short story about a cat."}]
    prompt_ids = smol_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    ours = list(prompt_ids)
    for _ in range(16):  # full recompute each step: the test backend keeps no KV cache
        ours.append(int(run_logits(smol_model, [ours])[-1].argmax()))
        if ours[-1] in smol_config.eos_token_ids:
            break
    with torch.inference_mode():
        hf = hf_smol_model.generate(torch.tensor([prompt_ids]), max_new_tokens=16, do_sample=False)[0].tolist()
    assert len(hf) == len(prompt_ids) + 16, "the prompt should not finish within 16 tokens"
    assert ours == hf


def test_batched_requests_equal_separate_runs(smol_model, smol_tokenizer):
    seqs = [smol_tokenizer.encode(p) for p in PROMPTS]
    batched = run_logits(smol_model, seqs)
    separate = torch.cat([run_logits(smol_model, [s]) for s in seqs])
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-4)
    fb = make_forward_batch(seqs)
    assert last_token_indices(fb).tolist() == list(torch.cumsum(torch.tensor([len(s) for s in seqs]), 0) - 1)


def test_backend_that_applies_rope_gets_unrotated_qk(smol_model, smol_config, smol_tokenizer):
    ids = smol_tokenizer.encode(PROMPTS[2])
    rope = smol_model.model.layers[0].self_attn.rotary_emb
    # an independent rotation inside the backend must reproduce the model's own rotation
    theta = smol_config.hf_config.rope_parameters["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, smol_config.head_dim, 2, dtype=torch.float64) / smol_config.head_dim)
    torch.testing.assert_close(rope.inv_freq(torch.device("cpu")), inv_freq, rtol=1e-12, atol=0)
    plain = run_logits(smol_model, [ids])
    via_backend = run_logits(smol_model, [ids], RotatingBackend(inv_freq))
    torch.testing.assert_close(via_backend, plain, rtol=1e-4, atol=1e-4)


def test_model_config_of_default_model(smol_config):
    assert smol_config.architecture == "LlamaForCausalLM"
    assert (smol_config.num_hidden_layers, smol_config.vocab_size, smol_config.context_len) == (30, 49152, 8192)
    assert (smol_config.num_attention_heads, smol_config.num_key_value_heads, smol_config.head_dim) == (9, 3, 64)
    assert smol_config.hf_config.tie_word_embeddings is True
    assert smol_config.eos_token_ids == {2}
    assert smol_config.dtype == torch.float32


def test_tied_default_model_shares_embedding(smol_model):
    assert smol_model.lm_head is smol_model.model.embed_tokens
