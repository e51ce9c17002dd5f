"""Choice methods for `sgl.select`: how per-token logprobs of each option become one decision.

Every method receives, for each option, the logprobs of the option's tokens given the prompt
(`input_token_logprobs`, entries `[logprob, token_id, token_text]`) and their mean
(`normalized_prompt_logprobs`), and returns a `ChoicesDecision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

LogprobEntry = Sequence[Any]  # [logprob | None, token_id, token_text | None]


@dataclass
class ChoicesDecision:
    decision: str
    meta_info: Optional[Dict[str, Any]] = None


def _first_argmax(values: Sequence[float]) -> int:
    # Ties go to the earliest option, so the decision does not depend on float noise order.
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _check_inputs(choices: List[str], per_choice: List[Any], name: str) -> None:
    if not choices:
        raise ValueError("choices must be a non-empty list")
    if len(per_choice) != len(choices):
        raise ValueError(f"{name} must have one entry per choice ({len(choices)}), got {len(per_choice)}")


class ChoicesSamplingMethod:
    """Base class; subclasses implement `__call__` with the keyword arguments below."""

    @property
    def requires_unconditional_logprobs(self) -> bool:
        return False

    def __call__(
        self,
        *,
        choices: List[str],
        normalized_prompt_logprobs: List[float],
        input_token_logprobs: List[List[LogprobEntry]],
        output_token_logprobs: List[List[LogprobEntry]],
        unconditional_token_logprobs: Optional[List[List[LogprobEntry]]] = None,
    ) -> ChoicesDecision:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


def _base_meta(normalized, input_lps, output_lps) -> Dict[str, Any]:
    return {
        "normalized_prompt_logprobs": normalized,
        "input_token_logprobs": input_lps,
        "output_token_logprobs": output_lps,
    }


class TokenLengthNormalized(ChoicesSamplingMethod):
    """Pick the option with the highest mean token logprob (the default)."""

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        _check_inputs(choices, normalized_prompt_logprobs, "normalized_prompt_logprobs")
        best = _first_argmax(normalized_prompt_logprobs)
        meta = _base_meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        return ChoicesDecision(decision=choices[best], meta_info=meta)


class GreedyTokenSelection(ChoicesSamplingMethod):
    """Compare options token by token, keeping those with the best logprob at each position.

    Options shorter than the longest are padded with their own mean logprob, so a short option
    that is a prefix of a longer one competes on its average confidence.
    """

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        _check_inputs(choices, input_token_logprobs, "input_token_logprobs")
        matrix = greedy_logprob_matrix(input_token_logprobs)
        survivors = _greedy_survivors(matrix)
        meta = _base_meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        meta["greedy_logprob_matrix"] = matrix
        return ChoicesDecision(decision=choices[survivors[0]], meta_info=meta)


def greedy_logprob_matrix(input_token_logprobs: List[List[LogprobEntry]]) -> List[List[float]]:
    """One row per option, padded to the longest option with the row's mean."""
    width = max(len(option) for option in input_token_logprobs)
    matrix = []
    for option in input_token_logprobs:
        row = [entry[0] for entry in option]
        pad = _mean(row) if row else float("nan")
        matrix.append(row + [pad] * (width - len(row)))
    return matrix


def _greedy_survivors(matrix: List[List[float]]) -> List[int]:
    survivors = list(range(len(matrix)))
    width = len(matrix[0]) if matrix else 0
    for col in range(width):
        best = max(matrix[i][col] for i in survivors)
        survivors = [i for i in survivors if matrix[i][col] == best]
        if len(survivors) == 1:
            break
    return survivors


class UnconditionalLikelihoodNormalized(ChoicesSamplingMethod):
    """Pick the option whose tokens gain the most from the prompt.

    Score = mean over the option's tokens of (logprob given the prompt - logprob of the option
    alone). The option-alone sequence has no logprob for its first token (None); it counts as 0.
    """

    @property
    def requires_unconditional_logprobs(self) -> bool:
        return True

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        if unconditional_token_logprobs is None:
            raise ValueError("unconditional_token_logprobs are required for unconditional_likelihood_normalized")
        _check_inputs(choices, unconditional_token_logprobs, "unconditional_token_logprobs")
        scores = [
            _unconditional_score(cond, uncond)
            for cond, uncond in zip(input_token_logprobs, unconditional_token_logprobs)
        ]
        meta = _base_meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        meta["unconditional_token_logprobs"] = unconditional_token_logprobs
        meta["normalized_unconditional_prompt_logprobs"] = scores
        return ChoicesDecision(decision=choices[_first_argmax(scores)], meta_info=meta)


def _unconditional_score(cond: List[LogprobEntry], uncond: List[LogprobEntry]) -> float:
    if len(cond) != len(uncond):
        raise ValueError(
            f"input_token_logprobs and unconditional_token_logprobs differ in length ({len(cond)} vs {len(uncond)})"
        )
    cond_values = [entry[0] for entry in cond]
    uncond_values = [entry[0] for entry in uncond]
    uncond_values[0] = uncond_values[0] or 0.0
    return float(_mean([c - u for c, u in zip(cond_values, uncond_values)]))


token_length_normalized = TokenLengthNormalized()
greedy_token_selection = GreedyTokenSelection()
unconditional_likelihood_normalized = UnconditionalLikelihoodNormalized()
