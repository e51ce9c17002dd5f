"""The three choice methods on fixed logprobs, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from sgl import greedy_token_selection, token_length_normalized, unconditional_likelihood_normalized

CHOICES = ["organ", "organism", "antidisestablishmentarianism"]
# organ -> [organ]; organism -> [organ, ism]; the long word -> 8 tokens.
INPUT = [
    [[-0.1, 1, None]],
    [[-0.1, 1, None], [-0.3, 2, None]],
    [[-0.4, 3, None], [-0.25, 4, None], [-0.1, 5, None]] + [[-0.01, t, None] for t in (6, 7, 8, 9, 2)],
]
UNCONDITIONAL = [
    [[None, 1, None]],
    [[None, 1, None], [-1.4, 2, None]],
    [[None, 3, None], [-0.25, 4, None], [-0.1, 5, None]] + [[-0.01, t, None] for t in (6, 7, 8, 9, 2)],
]
OUTPUT = [[[-0.1, 10, None]]] * 3
NORMALIZED = [-0.1, -0.2, -0.05]


def _call(method):
    return method(choices=CHOICES, normalized_prompt_logprobs=NORMALIZED, input_token_logprobs=INPUT,
                  output_token_logprobs=OUTPUT, unconditional_token_logprobs=UNCONDITIONAL)


def test_token_length_normalized_picks_highest_mean():
    # Means: -0.1, -0.2, -0.05 -> the long word wins.
    decision = _call(token_length_normalized)
    assert decision.decision == "antidisestablishmentarianism"
    assert decision.meta_info["normalized_prompt_logprobs"] == NORMALIZED


def test_greedy_token_selection_matrix_and_choice():
    # Rows padded to 8 with their own mean: organ mean -0.1; organism mean (-0.1-0.3)/2 = -0.2.
    # Column 0: -0.1, -0.1, -0.4 keeps organ and organism; column 1: -0.1 > -0.3 keeps organ.
    decision = _call(greedy_token_selection)
    assert decision.decision == "organ"
    expected = [
        [-0.1] * 8,
        [-0.1, -0.3] + [-0.2] * 6,
        [-0.4, -0.25, -0.1, -0.01, -0.01, -0.01, -0.01, -0.01],
    ]
    for row, want in zip(decision.meta_info["greedy_logprob_matrix"], expected):
        assert row == pytest.approx(want)


def test_unconditional_likelihood_normalized_values():
    # organ: (-0.1 - 0) / 1 = -0.1 (the None unconditional first token counts as 0)
    # organism: ((-0.1 - 0) + (-0.3 - -1.4)) / 2 = (-0.1 + 1.1) / 2 = 0.5
    # long word: ((-0.4 - 0) + 0 * 7) / 8 = -0.05
    decision = _call(unconditional_likelihood_normalized)
    assert decision.decision == "organism"
    assert decision.meta_info["normalized_unconditional_prompt_logprobs"] == pytest.approx([-0.1, 0.5, -0.05])
    assert decision.meta_info["unconditional_token_logprobs"] is UNCONDITIONAL


def test_ties_go_to_the_first_option():
    decision = token_length_normalized(choices=["a", "b"], normalized_prompt_logprobs=[-1.0, -1.0],
                                       input_token_logprobs=[[], []], output_token_logprobs=[[], []])
    assert decision.decision == "a"


def test_greedy_pads_empty_option_with_nan():
    decision = greedy_token_selection(choices=["x", ""], normalized_prompt_logprobs=[-1.0, -math.inf],
                                      input_token_logprobs=[[[-1.0, 1, None]], []], output_token_logprobs=[[], []])
    assert decision.decision == "x"


def test_unconditional_requires_its_logprobs():
    assert unconditional_likelihood_normalized.requires_unconditional_logprobs
    assert not token_length_normalized.requires_unconditional_logprobs
    with pytest.raises(ValueError, match="unconditional_token_logprobs"):
        unconditional_likelihood_normalized(choices=CHOICES, normalized_prompt_logprobs=NORMALIZED,
                                            input_token_logprobs=INPUT, output_token_logprobs=OUTPUT)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        unconditional_likelihood_normalized(
            choices=CHOICES[:1], normalized_prompt_logprobs=NORMALIZED[:1], input_token_logprobs=INPUT[1:2],
            output_token_logprobs=OUTPUT[:1], unconditional_token_logprobs=UNCONDITIONAL[:1])
    with pytest.raises(ValueError, match="choices"):
        token_length_normalized(choices=[], normalized_prompt_logprobs=[], input_token_logprobs=[],
                                output_token_logprobs=[])
