"""Embedding and reward models against HF transformers on tiny random configs (float32)."""

from __future__ import annotations

import pytest
import torch

from sgl.runtime.layers.pooler import Pooler, PoolingType, pool_rows
from sgl.runtime.models.llama_embedding import LlamaEmbeddingModel, LlamaForSequenceClassification, Qwen2Model
from sgl.runtime.models.registry import ModelRegistry
from sgltest.model_testing import make_forward_batch

transformers = pytest.importorskip("transformers")

SEQS = [[5, 17, 3, 99, 42, 7, 8], [11, 2, 64], [1, 120, 33, 33, 9]]


def _llama_config(**kw):
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   pad_token_id=0, **kw)
    cfg._attn_implementation = "eager"
    return cfg


def _ours(cls, hf_model, config):
    torch.manual_seed(0)
    model = cls(config).float()
    loaded = model.load_weights(hf_model.state_dict().items())
    assert loaded == {n for n, _ in model.named_parameters()}
    return model.eval()


@torch.no_grad()
def _hf_hidden(hf_model, seq):
    return hf_model(torch.tensor([seq])).last_hidden_state[0]


@pytest.mark.parametrize("pooling", ["last", "mean"])
@torch.no_grad()
def test_llama_embedding_matches_hf(pooling):
    torch.manual_seed(0)
    config = _llama_config(pooling_type=pooling)
    hf = transformers.LlamaModel(config).float().eval()
    ours = _ours(LlamaEmbeddingModel, hf, config)
    fb = make_forward_batch(SEQS)
    hidden = ours(fb.input_ids, fb.positions, fb)
    got = ours.pooler(hidden, fb)
    for i, seq in enumerate(SEQS):
        h = _hf_hidden(hf, seq)
        want = h[-1] if pooling == "last" else h.mean(0)
        want = torch.nn.functional.normalize(want, dim=-1)
        torch.testing.assert_close(got[i], want, atol=1e-4, rtol=1e-4)
        assert abs(float(got[i].norm()) - 1.0) < 1e-5


@torch.no_grad()
def test_pooling_split_across_chunks_equals_one_forward():
    """What the scheduler does for a chunked prompt: per-chunk reductions summed, then finished."""
    hidden = torch.randn(10, 8)
    for kind in PoolingType:
        pooler = Pooler(kind, normalize=True)
        whole = pooler.finish(pool_rows(hidden, [10], kind), [10])
        a, b = pool_rows(hidden[:4], [4], kind), pool_rows(hidden[4:], [6], kind)
        split = pooler.finish(a + b if kind is PoolingType.MEAN else b, [10])
        torch.testing.assert_close(split, whole)


@pytest.mark.parametrize("num_labels", [1, 3])
@torch.no_grad()
def test_llama_sequence_classification_matches_hf(num_labels):
    torch.manual_seed(0)
    config = _llama_config(num_labels=num_labels)
    hf = transformers.LlamaForSequenceClassification(config).float().eval()
    ours = _ours(LlamaForSequenceClassification, hf, config)
    fb = make_forward_batch(SEQS)
    hidden = ours(fb.input_ids, fb.positions, fb)
    pooled = pool_rows(hidden, fb.extend_seq_lens_cpu, ours.pooler.pooling_type)
    got = ours.embedding_head(pooled, fb.extend_seq_lens_cpu)
    # HF pools the last non-padding token of a right-padded batch
    width = max(len(s) for s in SEQS)
    ids = torch.tensor([s + [config.pad_token_id] * (width - len(s)) for s in SEQS])
    mask = (ids != config.pad_token_id).long()
    want = hf(ids, attention_mask=mask).logits
    assert got.shape == (len(SEQS), num_labels)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_qwen2_sequence_classification_matches_hf():
    from sgl.runtime.models.llama_embedding import Qwen2ForSequenceClassification

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      num_labels=2, pad_token_id=0)
    config._attn_implementation = "eager"
    hf = transformers.Qwen2ForSequenceClassification(config).float().eval()
    ours = _ours(Qwen2ForSequenceClassification, hf, config)
    fb = make_forward_batch(SEQS[:1])
    pooled = pool_rows(ours(fb.input_ids, fb.positions, fb), fb.extend_seq_lens_cpu, PoolingType.LAST)
    torch.testing.assert_close(ours.embedding_head(pooled, [len(SEQS[0])]), hf(torch.tensor(SEQS[:1])).logits,
                               atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_qwen2_base_model_loads_biased_projections():
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    config._attn_implementation = "eager"
    hf = transformers.Qwen2Model(config).float().eval()
    ours = _ours(Qwen2Model, hf, config)
    fb = make_forward_batch(SEQS[:1])
    got = ours.pooler(ours(fb.input_ids, fb.positions, fb), fb)
    want = torch.nn.functional.normalize(_hf_hidden(hf, SEQS[0])[-1], dim=-1)
    torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-4)


def test_pooling_architectures_are_registered():
    for arch in ("LlamaEmbeddingModel", "LlamaModel", "MistralModel", "Qwen2Model", "LlamaForSequenceClassification",
                 "MistralForSequenceClassification", "Qwen2ForSequenceClassification"):
        assert ModelRegistry.resolve_model_cls([arch])[1] == arch


def test_unknown_pooling_type_is_refused():
    with pytest.raises(ValueError, match="pooling_type 'cls'"):
        LlamaEmbeddingModel(_llama_config(pooling_type="cls"))
