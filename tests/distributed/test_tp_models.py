"""Tensor parallelism on tiny random float32 checkpoints, ranks as gloo subprocesses: rank 0's
scheduler at tp 2 and 3 gives the greedy tokens (and logprobs, to 1e-4) of one rank, through
prefills, decode steps, a radix-cache hit, chunked prefill with mixed decode, and the overlap
scheduler; for an even head split, an uneven one (KV groups dealt 2 / 1), a KV head replicated
over the ranks, q/k/v biases (Qwen2), tied embeddings with soft-caps and windows (Gemma 2), a
mixture of experts (Mixtral), and a vocabulary the ranks split with padding; and the same models
served as embedding models (pooled prefill-only forwards)."""

from __future__ import annotations

import pytest
import torch
import transformers

from sgltest.tp_ranks import greedy_workload, run_on_ranks

# head_dim 16: with 4 heads the attention width (64) is not the hidden size (96)
BASE = dict(vocab_size=251, hidden_size=96, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=256,
            rms_norm_eps=1e-6, head_dim=16)
CONFIGS = {
    "llama-kv2": transformers.LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    # tp 2: rank 0 holds KV heads 0-1 and query heads 0-3, rank 1 KV head 2 and query heads 4-5
    "llama-kv3": transformers.LlamaConfig(**BASE, num_attention_heads=6, num_key_value_heads=3, tie_word_embeddings=False),
    # one KV head, stored on every rank
    "llama-kv1": transformers.LlamaConfig(**BASE, num_attention_heads=6, num_key_value_heads=1),
    "qwen2": transformers.Qwen2Config(**BASE, num_attention_heads=6, num_key_value_heads=3, tie_word_embeddings=False),
    "gemma2": transformers.Gemma2Config(**BASE, num_attention_heads=6, num_key_value_heads=3, query_pre_attn_scalar=24,
                                        sliding_window=5, attn_logit_softcapping=3.0, final_logit_softcapping=4.0),
    "mixtral": transformers.MixtralConfig(**BASE, num_attention_heads=6, num_key_value_heads=3, num_local_experts=4,
                                          num_experts_per_tok=2, tie_word_embeddings=False),
}
HF_CLASSES = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
              "gemma2": transformers.Gemma2ForCausalLM, "mixtral": transformers.MixtralForCausalLM}
PROMPTS = [[5, 17, 42, 99, 3, 250, 7, 64, 11, 12, 200, 31, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [240, 9, 77]]
NEW_TOKENS = 6
# the last: the causal LMs served as embedding models (pooled prefill-only forwards, no logits)
FLAGS = [{}, {"chunked_prefill_size": 4, "enable_mixed_chunk": True}, {"is_embedding": True, "chunked_prefill_size": 4}]
# which models each tp size runs (llama-kv2 at tp 3: 3 ranks cannot share 2 KV heads, checked below)
TP_MODELS = {2: sorted(CONFIGS), 3: ["llama-kv3", "llama-kv1", "mixtral"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    dirs = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = HF_CLASSES[name.split("-")[0]](config).eval()
        with torch.no_grad():  # larger than HF's init: peaked logits, so greedy choices are not near-ties
            for pname, param in model.named_parameters():
                param.normal_(0.0, 0.3 if "norm" in pname else 0.15)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path, safe_serialization=True)
        dirs[name] = str(path)
    return dirs


@pytest.mark.parametrize("tp_size", sorted(TP_MODELS))
def test_greedy_matches_one_rank(checkpoints, tp_size):
    dirs = [checkpoints[name] for name in TP_MODELS[tp_size]]
    expected = greedy_workload(dirs, 1, FLAGS, PROMPTS, NEW_TOKENS)
    got = run_on_ranks(tp_size, "sgltest.tp_ranks:greedy_workload", dirs, tp_size, FLAGS, PROMPTS, NEW_TOKENS)
    assert got.keys() == expected.keys()
    for (flags, path), results in expected.items():
        assert got[(flags, path)].keys() == results.keys()
        for rid, want in results.items():
            have, where = got[(flags, path)][rid], f"{path} {FLAGS[flags]} {rid}"
            if "embedding" in want:
                close(have["embedding"], want["embedding"], where)
                continue
            assert have["ids"] == want["ids"], where
            assert len(want["logprobs"]) == NEW_TOKENS
            close(have["logprobs"], want["logprobs"], where)


def close(a, b, where: str) -> None:
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4, msg=where)
