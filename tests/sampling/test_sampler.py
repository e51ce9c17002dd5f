"""Sampler against plain per-row reference implementations written here."""

import math

import pytest
import torch

from sgl.runtime.sampling.batch_info import SamplingBatchInfo
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.sampling.sampler import (
    Sampler,
    compute_input_logprobs,
    filter_probs,
    get_top_logprobs,
    step_seed,
)


def _info(params, vocab_size, **kw):
    for p in params:
        p.normalize(None)
        p.verify(vocab_size)
    return SamplingBatchInfo.from_params(params, vocab_size, **kw)


# --------------------------------------------------------------------- references


def ref_softmax(row, temperature=1.0):
    xs = [x / temperature for x in row]
    m = max(xs)
    exps = [math.exp(x - m) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def ref_support(row, temperature, top_k, top_p, min_p):
    """Token ids that may be sampled: top-k, then nucleus on the renormalized top-k, then min-p."""
    probs = ref_softmax(row, temperature)
    order = sorted(range(len(row)), key=lambda i: -probs[i])[:top_k]
    total = sum(probs[i] for i in order)
    kept, above = [], 0.0
    for i in order:
        if top_p >= 1.0 or above / total <= top_p:
            kept.append(i)
        above += probs[i]
    best = probs[kept[0]]
    return {i for i in kept if probs[i] >= best * min_p}


def ref_top_p_logprobs(row, temperature, top_p):
    probs = ref_softmax(row, temperature)
    order = sorted(range(len(row)), key=lambda i: -probs[i])
    kept, above = set(), 0.0
    for i in order:
        if top_p >= 1.0 or above <= top_p:
            kept.add(i)
        above += probs[i]
    total = sum(probs[i] for i in kept)
    return [math.log(probs[i] / total) if i in kept else -math.inf for i in range(len(row))]


def chi_square(counts, expected_probs):
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, expected_probs))


def _sample_counts(params, logits_row, draws, seed):
    info = _info([params for _ in range(draws)], len(logits_row))
    torch.manual_seed(seed)
    logits = torch.tensor([logits_row] * draws)
    ids = Sampler().forward(logits, info).next_token_ids
    return torch.bincount(ids, minlength=len(logits_row)).tolist()


# --------------------------------------------------------------------- greedy and filters


def test_all_greedy_is_argmax_with_raw_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(5, 300)
    info = _info([SamplingParams(temperature=0.0) for _ in range(5)], 300)
    assert info.is_all_greedy
    out = Sampler().forward(logits, info, return_logprob=True, top_logprobs_nums=[0, 1, 2, 3, 0])
    assert torch.equal(out.next_token_ids, logits.argmax(-1))
    raw = torch.log_softmax(logits, -1)
    assert torch.allclose(out.logprobs, raw.max(-1).values)
    values, ids = out.top_logprobs[3]
    top = raw[3].topk(3)
    assert ids == top.indices.tolist() and values == pytest.approx(top.values.tolist(), abs=1e-6)
    assert out.top_logprobs[0] == ([], [])


def test_top_k_one_and_tiny_top_p_are_deterministic():
    torch.manual_seed(1)
    row = torch.randn(64)
    params = [
        SamplingParams(temperature=1.5, top_k=1),
        SamplingParams(temperature=1.5, top_p=1e-6),
        SamplingParams(temperature=1.5),
    ]
    info = _info(params, 64)
    assert not info.is_all_greedy
    seen_free = set()
    for _ in range(40):
        ids = Sampler().forward(row.repeat(3, 1), info).next_token_ids.tolist()
        assert ids[0] == ids[1] == int(row.argmax())
        seen_free.add(ids[2])
    assert len(seen_free) > 3  # the unfiltered request really samples


def test_filter_support_matches_reference():
    torch.manual_seed(2)
    vocab = 40
    logits = torch.randn(6, vocab) * 2
    params = [
        SamplingParams(temperature=0.8, top_k=5),
        SamplingParams(temperature=1.2, top_p=0.6),
        SamplingParams(temperature=1.0, min_p=0.1),
        SamplingParams(temperature=0.5, top_k=8, top_p=0.7, min_p=0.05),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=2.0, top_k=3, top_p=0.2),
    ]
    info = _info(params, vocab)
    probs = torch.softmax(logits / info.temperatures, -1)
    weights = filter_probs(probs, info)
    for i, p in enumerate(params):
        expected = ref_support(logits[i].tolist(), p.temperature, min(p.top_k, vocab), p.top_p, p.min_p)
        assert set(torch.nonzero(weights[i]).flatten().tolist()) == expected, p
        assert torch.allclose(weights[i][list(expected)], probs[i][list(expected)])


def test_min_p_filters_statistically():
    probs = [0.5, 0.3, 0.15, 0.05]
    row = [math.log(p) for p in probs]
    counts = _sample_counts(SamplingParams(min_p=0.2), row, draws=6000, seed=3)
    assert counts[3] == 0  # 0.05 < 0.2 * 0.5
    assert chi_square(counts[:3], [p / 0.95 for p in probs[:3]]) < 20


def test_temperature_reshapes_distribution():
    probs = [0.6, 0.3, 0.1]
    row = [math.log(p) for p in probs]
    for temperature in (0.5, 2.0):
        counts = _sample_counts(SamplingParams(temperature=temperature), row, draws=20000, seed=4)
        powered = [p ** (1 / temperature) for p in probs]
        expected = [x / sum(powered) for x in powered]
        # df = 2: 20 is beyond the 0.01% tail, yet the untempered distribution is far off.
        assert chi_square(counts, expected) < 20
        assert chi_square(counts, probs) > 200


# --------------------------------------------------------------------- logprobs


def test_mixed_batch_logprobs_are_top_p_renormalized():
    torch.manual_seed(5)
    vocab = 50
    logits = torch.randn(3, vocab)
    params = [
        SamplingParams(temperature=0.7, top_p=0.8),
        SamplingParams(temperature=1.3, top_k=10),
        SamplingParams(temperature=0.0, top_p=0.5),
    ]
    info = _info(params, vocab)
    out = Sampler().forward(logits, info, return_logprob=True, top_logprobs_nums=[3, 0, 2])
    ids = out.next_token_ids.tolist()
    ref0 = ref_top_p_logprobs(logits[0].tolist(), 0.7, 0.8)
    ref1 = ref_top_p_logprobs(logits[1].tolist(), 1.3, 1.0)
    assert out.logprobs[0].item() == pytest.approx(ref0[ids[0]], abs=1e-4)
    assert out.logprobs[1].item() == pytest.approx(ref1[ids[1]], abs=1e-4)
    top_ref = sorted(range(vocab), key=lambda i: -ref0[i])[:3]
    assert 3 < sum(math.isfinite(x) for x in ref0) < vocab  # the nucleus cuts, but not to top-3
    assert out.top_logprobs[0][1] == top_ref
    assert out.top_logprobs[0][0] == pytest.approx([ref0[i] for i in top_ref], abs=1e-4)
    assert out.top_logprobs[1] == ([], [])
    # The greedy request: argmax, and the same raw logprobs an all-greedy batch reports.
    raw = torch.log_softmax(logits[2], -1)
    assert ids[2] == int(logits[2].argmax())
    assert out.logprobs[2].item() == pytest.approx(raw.max().item(), abs=1e-4)
    assert out.top_logprobs[2][1] == raw.topk(2).indices.tolist()


def test_logprobs_are_finite_json_numbers():
    logits = torch.tensor([[5.0, 0.0, -5.0, -30.0]])
    info = _info([SamplingParams(top_p=0.5)], 4)
    out = Sampler().forward(logits, info, return_logprob=True, top_logprobs_nums=[4])
    assert all(math.isfinite(v) for v in out.top_logprobs[0][0])


def test_compute_input_logprobs_and_top_logprobs():
    torch.manual_seed(6)
    logits = torch.randn(4, 30)
    next_ids = torch.tensor([3, 0, 29, 7])
    got = compute_input_logprobs(logits, next_ids)
    for i in range(4):
        ref = math.log(ref_softmax(logits[i].tolist())[next_ids[i]])
        assert got[i].item() == pytest.approx(ref, abs=1e-5)
    tops = get_top_logprobs(torch.log_softmax(logits, -1), [0, 2, 5, 40])
    assert tops[0] == ([], []) and len(tops[1][1]) == 2 and len(tops[2][1]) == 5 and len(tops[3][1]) == 30
    assert tops[2][1][0] == int(logits[2].argmax())
    with pytest.raises(ValueError, match="k_list"):
        get_top_logprobs(logits, [1, 1])
    with pytest.raises(ValueError, match="next_ids"):
        compute_input_logprobs(logits, next_ids[:2])


# --------------------------------------------------------------------- seeds


def _run_seeded(batch, target, steps=10):
    """Sample `steps` tokens; return the token sequence of request `target`."""
    vocab = 500
    info = _info(batch, vocab)
    base = torch.randn(vocab, generator=torch.Generator().manual_seed(9)) * 2
    noise = torch.Generator().manual_seed(len(batch))
    seq = []
    for step in range(steps):
        logits = torch.randn(len(batch), vocab, generator=noise)
        logits[target] = base + 0.1 * step
        ids = Sampler().forward(logits, info).next_token_ids
        info.cumulate_output_tokens(ids)
        seq.append(int(ids[target]))
    return seq


def test_seeded_request_reproducible_across_batches():
    def request(seed=42):
        return SamplingParams(temperature=1.0, top_p=0.95, seed=seed)

    torch.manual_seed(100)
    alone = _run_seeded([request()], 0)
    torch.manual_seed(200)  # the global RNG must not matter
    crowded = _run_seeded(
        [
            SamplingParams(temperature=1.0),
            request(),
            SamplingParams(top_k=50, seed=7),
            SamplingParams(temperature=0),
        ],
        1,
    )
    assert alone == crowded
    assert len(set(alone)) > 3  # each step draws fresh randomness
    assert _run_seeded([request(seed=43)], 0) != alone


def test_step_seed_mixes():
    seeds = {step_seed(s, t) for s in range(20) for t in range(20)}
    assert len(seeds) == 400 and all(0 <= x < 1 << 63 for x in seeds)
    assert step_seed(-5, 0) >= 0


# --------------------------------------------------------------------- bias, guards, errors


def test_vocab_mask_blocks_tokens_and_logits_untouched():
    torch.manual_seed(7)
    logits = torch.randn(2, 20)
    before = logits.clone()
    info = _info([SamplingParams(temperature=0, repetition_penalty=1.5), SamplingParams(temperature=0)], 20)
    info.vocab_mask = torch.zeros(2, 20, dtype=torch.bool)
    best = logits.argmax(-1)
    info.vocab_mask[1, best[1]] = True
    ids = Sampler().forward(logits, info).next_token_ids
    assert ids[1] != best[1] and ids[1] == logits[1].topk(2).indices[1]
    assert torch.equal(logits, before)


def test_nan_guard():
    logits = torch.tensor([[0.0, float("nan"), 1.0, 0.5]])
    info = _info([SamplingParams(temperature=0)], 4)
    assert Sampler(enable_nan_detection=True).forward(logits, info).next_token_ids.item() == 2


def test_shape_errors_name_the_argument():
    info = _info([SamplingParams()], 10)
    with pytest.raises(ValueError, match="logits"):
        Sampler().forward(torch.zeros(2, 10), info)
    with pytest.raises(ValueError, match="top_logprobs_nums"):
        Sampler().forward(torch.zeros(1, 10), info, True, [1, 2])


def test_padded_lm_head_columns_are_never_sampled():
    logits = torch.zeros(2, 12)
    logits[:, 11] = 50.0  # a padding column past vocab_size
    logits[:, 4] = 1.0
    info = _info([SamplingParams(temperature=0), SamplingParams(top_k=1, temperature=0.9)], 10)
    out = Sampler().forward(logits, info, return_logprob=True, top_logprobs_nums=[1, 1])
    assert out.next_token_ids.tolist() == [4, 4]
