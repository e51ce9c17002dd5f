"""Penalties against a per-request Python reference, across filter and merge of the batch."""

import math
import random
from collections import Counter

import torch

from sgl.runtime.sampling.batch_info import SamplingBatchInfo
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.sampling.sampler import Sampler

VOCAB = 30
EOS = 2


def ref_penalize(row, params, prompt, outputs, eos_ids):
    """One request's penalized logits, written the obvious way."""
    out = list(row)
    for token, count in Counter(outputs).items():
        out[token] -= params.frequency_penalty * count + params.presence_penalty
    rep = params.repetition_penalty
    if rep != 1.0:
        for token in set(prompt) | set(outputs):
            out[token] = out[token] / rep if out[token] > 0 else out[token] * rep
    if len(outputs) < params.min_new_tokens:
        for token in set(params.stop_token_ids or ()) | set(eos_ids):
            out[token] = -math.inf
    return out


class Simulation:
    """A running batch: its SamplingBatchInfo next to the plain per-request state."""

    def __init__(self, requests, outputs=None):
        self.requests = list(requests)  # (params, prompt)
        self.outputs = [list(o) for o in outputs] if outputs else [[] for _ in requests]
        self.info = SamplingBatchInfo.from_params(
            [p for p, _ in requests],
            VOCAB,
            prompt_token_ids=[prompt for _, prompt in requests],
            output_token_ids=self.outputs if outputs else None,
            eos_token_ids=[EOS],
        )

    def step(self, rng):
        logits = torch.randn(
            len(self.requests), VOCAB, generator=torch.Generator().manual_seed(rng.randrange(1 << 30))
        )
        got = logits.clone()
        self.info.apply_logits_bias(got)
        for i, (params, prompt) in enumerate(self.requests):
            want = ref_penalize(logits[i].tolist(), params, prompt, self.outputs[i], [EOS])
            assert torch.allclose(got[i], torch.tensor(want), atol=1e-5), (i, params)
        # A small id range makes tokens repeat, so counts above 1 get exercised.
        next_ids = [rng.randrange(12) for _ in self.requests]
        self.info.cumulate_output_tokens(torch.tensor(next_ids))
        for out, token in zip(self.outputs, next_ids):
            out.append(token)

    def filter(self, keep):
        self.info.filter(keep)
        self.requests = [self.requests[i] for i in keep]
        self.outputs = [self.outputs[i] for i in keep]

    def merge(self, other):
        self.info.merge(other.info)
        self.requests += other.requests
        self.outputs += other.outputs


def test_penalties_match_reference_through_filter_and_merge():
    rng = random.Random(0)
    running = Simulation(
        [
            (SamplingParams(frequency_penalty=0.7, presence_penalty=0.3), [1, 5, 5]),
            (SamplingParams(repetition_penalty=1.6), [4, 7, 9]),
            (SamplingParams(presence_penalty=-1.0, min_new_tokens=3, stop_token_ids=[11]), [3]),
            (SamplingParams(), [6]),
        ]
    )
    for _ in range(3):
        running.step(rng)
    running.filter([3, 0, 2])  # reorders too
    running.step(rng)
    joining = Simulation(
        [
            (SamplingParams(repetition_penalty=0.6, frequency_penalty=-0.5), [8, 8, 10]),
            (SamplingParams(min_new_tokens=5), [0]),
        ]
    )
    joining.step(rng)
    running.merge(joining)
    for _ in range(6):
        running.step(rng)
    running.filter([4])
    running.step(rng)


def test_merge_into_batch_without_penalties():
    rng = random.Random(1)
    running = Simulation([(SamplingParams(), [1]), (SamplingParams(temperature=0), [2])])
    running.step(rng)
    assert running.info.penalizer.tensors == {}
    running.merge(Simulation([(SamplingParams(repetition_penalty=1.3, min_new_tokens=2), [5, 6])]))
    for _ in range(3):
        running.step(rng)


def test_resumed_request_counts_previous_outputs():
    rng = random.Random(2)
    params = SamplingParams(frequency_penalty=1.0, repetition_penalty=1.2, min_new_tokens=4)
    resumed = Simulation([(params, [1, 2])], outputs=[[7, 7, 3]])
    for _ in range(3):
        resumed.step(rng)


def test_tensors_allocated_only_when_used():
    def names(**kw):
        info = SamplingBatchInfo.from_params([SamplingParams(), SamplingParams(**kw)], VOCAB)
        return set(info.penalizer.tensors)

    assert names() == set()
    assert names(frequency_penalty=0.5) == {"frequency", "presence", "counts"}
    assert names(repetition_penalty=1.1) == {"repetition", "prompt_mask", "counts"}
    assert names(min_new_tokens=2) == {"min_new", "out_lens", "stop_mask"}


def test_min_new_tokens_masks_eos_until_reached():
    params = [
        SamplingParams(temperature=0, min_new_tokens=3, stop_token_ids=[5]),
        SamplingParams(temperature=0),
    ]
    info = SamplingBatchInfo.from_params(params, VOCAB, eos_token_ids=[EOS])
    logits = torch.zeros(2, VOCAB)
    logits[:, EOS] = 10.0  # EOS is everyone's favourite
    logits[:, 5] = 9.0  # then the stop token
    logits[:, 8] = 1.0
    chosen = []
    for _ in range(5):
        ids = Sampler().forward(logits, info).next_token_ids
        info.cumulate_output_tokens(ids)
        chosen.append(ids.tolist())
    assert [c[0] for c in chosen] == [8, 8, 8, EOS, EOS]
    assert [c[1] for c in chosen] == [EOS] * 5  # the request without min_new_tokens is untouched


def test_bad_prompt_ids_rejected():
    import pytest

    with pytest.raises(ValueError, match="prompt_token_ids"):
        SamplingBatchInfo.from_params(
            [SamplingParams(repetition_penalty=1.2)], VOCAB, prompt_token_ids=[[VOCAB]]
        )
    with pytest.raises(ValueError, match="prompt_token_ids"):
        SamplingBatchInfo.from_params([SamplingParams()], VOCAB, prompt_token_ids=[[1], [2]])
