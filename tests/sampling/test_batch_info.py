"""SamplingBatchInfo: per-request state survives requests leaving (filter) and joining (merge)."""

import pytest
import torch

from sgl.runtime.sampling.batch_info import SamplingBatchInfo
from sgl.runtime.sampling.params import TOP_K_ALL, SamplingParams


def _batch(*params, vocab=100):
    return SamplingBatchInfo.from_params(list(params), vocab)


def test_from_params_tensors():
    info = _batch(
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.5, top_p=0.9, top_k=20, min_p=0.1, seed=3),
        SamplingParams(top_k=-1),
    )
    assert info.temperatures.shape == (3, 1)
    assert info.temperatures.flatten().tolist() == [1.0, 0.5, 1.0]
    assert info.top_ks.tolist() == [1, 20, 100]  # greedy -> 1, disabled -> vocab
    assert info.top_ps.tolist() == pytest.approx([1.0, 0.9, 1.0])
    assert info.min_ps.tolist() == pytest.approx([0.0, 0.1, 0.0])
    assert info.is_greedy.tolist() == [True, False, False]
    assert info.seeds == [None, 3, None] and info.output_lens == [0, 0, 0]
    assert not info.is_all_greedy and info.need_min_p
    # Normalized params give the same tensors.
    normalized = SamplingParams(temperature=0.0)
    normalized.normalize(None)
    assert normalized.top_k == 1 and _batch(normalized).is_all_greedy
    assert SamplingParams(top_k=-1).effective_top_k() == TOP_K_ALL


def test_filter_and_merge_keep_per_request_state():
    info = _batch(
        SamplingParams(temperature=0.3, seed=1),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.9, top_k=5),
    )
    info.cumulate_output_tokens(torch.tensor([1, 2, 3]))
    info.filter(torch.tensor([2, 1]))
    assert info.temperatures.flatten().tolist() == pytest.approx([0.9, 1.0])
    assert info.top_ks.tolist() == [5, 1] and info.seeds == [None, None]
    assert info.output_lens == [1, 1]
    info.filter([1])
    assert info.is_all_greedy and info.batch_size == 1
    newcomer = _batch(SamplingParams(temperature=1.2, min_p=0.2, seed=9))
    info.merge(newcomer)
    assert not info.is_all_greedy and info.need_min_p
    assert info.temperatures.flatten().tolist() == pytest.approx([1.0, 1.2])
    assert info.seeds == [None, 9] and info.output_lens == [1, 0]
    assert info.is_greedy.tolist() == [True, False]
    info.cumulate_output_tokens(torch.tensor([4, 5]))
    assert info.output_lens == [2, 1]
    info.filter([])
    assert info.batch_size == 0 and info.temperatures.shape == (0, 1)


def test_vocab_mask_follows_requests():
    a, b = _batch(SamplingParams(), SamplingParams()), _batch(SamplingParams())
    a.vocab_mask = torch.zeros(2, 100, dtype=torch.bool)
    a.vocab_mask[1, 7] = True
    a.filter([1])
    assert a.vocab_mask.shape == (1, 100) and a.vocab_mask[0, 7]
    a.merge(b)
    assert a.vocab_mask.shape == (2, 100) and not a.vocab_mask[1].any()


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="vocab_size"):
        SamplingBatchInfo.from_params([SamplingParams()], 0)
    with pytest.raises(ValueError, match="params"):
        SamplingBatchInfo.from_params([{"temperature": 1.0}], 10)
    info = _batch(SamplingParams())
    with pytest.raises(ValueError, match="keep_indices"):
        info.filter([1])
    with pytest.raises(ValueError, match="next_token_ids"):
        info.cumulate_output_tokens(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="vocab_size"):
        info.merge(_batch(SamplingParams(), vocab=50))
