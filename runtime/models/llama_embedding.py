"""Pooling models on the Llama decoder: embedding models (`LlamaEmbeddingModel`, `LlamaModel`,
e5-mistral's `MistralModel`, `Qwen2Model`) and reward / classification models
(`LlamaForSequenceClassification`, Skywork-Reward style: a `score` head on the last token; the
Mistral and Qwen2 ones alike).

They run prefill only. The forward returns the final hidden states like a causal LM's; the
scheduler pools them per request (layers/pooler.py) and `embedding_head` turns the pooled vector
into what the client gets: the L2-normalized embedding, or the `num_labels` scores.
"""

from __future__ import annotations

from typing import Iterable, Optional, Set, Tuple

import torch
from torch import nn
from transformers import PretrainedConfig

from sgl.runtime.executor.forward_batch import ForwardBatch
from sgl.runtime.layers.linear import ReplicatedLinear
from sgl.runtime.layers.pooler import Pooler, PoolingType, pooling_type_of
from sgl.runtime.models.llama import LlamaDecoderWeights


class PoolingModel(LlamaDecoderWeights, nn.Module):
    """Base of the models served through /encode, /classify and /v1/embeddings only."""

    tie_word_embeddings = True  # no LM head: a checkpoint's lm_head.weight is skipped

    def __init__(self, config: PretrainedConfig, quant_config: object = None):
        super().__init__()
        self.config = config
        self.model = self.build_decoder(config, quant_config)
        self.pooler = self.make_pooler(config)

    def make_pooler(self, config: PretrainedConfig) -> Pooler:
        return Pooler(pooling_type_of(config), normalize=True)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids, positions [T] -> final-normed hidden states [T, hidden]."""
        return self.model(input_ids, positions, forward_batch, input_embeds)

    def embedding_head(self, pooled: torch.Tensor, num_tokens: "list[int]") -> torch.Tensor:
        """Pooled reductions of whole prompts [k, hidden] -> float32 outputs [k, dim]."""
        return self.pooler.finish(pooled, num_tokens)

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> Set[str]:
        # base-model checkpoints (HF `LlamaModel`, e5-mistral) name tensors without the "model." prefix
        return super().load_weights((_with_model_prefix(n), t) for n, t in weights)


def _with_model_prefix(name: str) -> str:
    if name.startswith(("model.", "score.", "lm_head.")):
        return name
    return "model." + name


class LlamaEmbeddingModel(PoolingModel):
    pass


class LlamaBaseModel(PoolingModel):
    """HF's `LlamaModel` (a base-model checkpoint saved without a head): the registry keys classes
    by `__name__`, and the decoder class of llama.py already holds that Python name."""


LlamaBaseModel.__name__ = LlamaBaseModel.__qualname__ = "LlamaModel"


class MistralModel(PoolingModel):
    """e5-mistral-7b-instruct's architecture name: the Llama decoder without an LM head."""


class Qwen2Model(PoolingModel):
    qkv_bias = True


class LlamaForSequenceClassification(PoolingModel):
    """A linear `score` head [num_labels, hidden] on the last token's hidden state, not normalized
    (HF scores every position and picks the last non-padding one: the same number)."""

    def __init__(self, config: PretrainedConfig, quant_config: object = None):
        super().__init__(config, quant_config)
        self.score = ReplicatedLinear(config.hidden_size, getattr(config, "num_labels", 1), bias=False)

    def make_pooler(self, config: PretrainedConfig) -> Pooler:
        return Pooler(PoolingType.LAST, normalize=False)

    def embedding_head(self, pooled: torch.Tensor, num_tokens: "list[int]") -> torch.Tensor:
        return self.score(pooled.to(self.score.weight.dtype)).float()


class MistralForSequenceClassification(LlamaForSequenceClassification):
    pass


class Qwen2ForSequenceClassification(LlamaForSequenceClassification):
    qkv_bias = True


EntryClass = [LlamaEmbeddingModel, LlamaBaseModel, MistralModel, Qwen2Model, LlamaForSequenceClassification,
              MistralForSequenceClassification, Qwen2ForSequenceClassification]
