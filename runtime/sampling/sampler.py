"""Sampler: next-token ids (and their logprobs) from a batch of logits (SGLang §3.7).

Order of operations:
1. the batch's logit bias: penalties, then the grammar mask (`SamplingBatchInfo.apply_logits_bias`);
2. optional NaN guard;
3. if every request is greedy: argmax, and logprobs are the raw `log_softmax`;
4. otherwise `logits / temperature`, softmax, then top-k, top-p (on the top-k-renormalized
   mass, like flashinfer's top-k-first joint sampler) and min-p (relative to the top token)
   filters, and a multinomial draw. Greedy requests in a mixed batch take the argmax.
   Output logprobs are, as in SGLang, the log of the temperature-scaled, top-p-renormalized
   probabilities, which for greedy requests (temperature 1, top_p 1) are the raw log_softmax:
   a greedy request reports the same logprobs whatever batch it is in.

Seeded requests draw from their own torch.Generator seeded from (seed, step), so the same request
samples the same tokens whatever else is in the batch; the rest share the global RNG in one
vectorized draw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from sgl.runtime.sampling.batch_info import SamplingBatchInfo
from sgl.runtime.executor.host_to_device import to_device

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
TopLogprobs = list[tuple[list[float], list[int]]]


@dataclass
class SampleOutput:
    next_token_ids: torch.Tensor  # [bs] int64
    logprobs: Optional[torch.Tensor] = None  # [bs] float32: logprob of each chosen token
    top_logprobs: Optional[TopLogprobs] = None  # per request: (values, token ids), k_i long


class Sampler:
    def __init__(self, enable_nan_detection: bool = False) -> None:
        self.enable_nan_detection = enable_nan_detection

    def forward(
        self,
        logits: torch.Tensor,
        batch_info: SamplingBatchInfo,
        return_logprob: bool = False,
        top_logprobs_nums: Optional[Sequence[int]] = None,
    ) -> SampleOutput:
        """Sample one token per row of `logits` [bs, vocab]. The caller's tensor is not modified.

        After using the ids, call `batch_info.cumulate_output_tokens(next_token_ids)`.
        """
        _check_inputs(logits, batch_info, top_logprobs_nums)
        logits = self._biased(logits, batch_info)
        if batch_info.is_all_greedy:
            next_ids = torch.argmax(logits, dim=-1)
            logprobs = _clamp(torch.log_softmax(logits, dim=-1)) if return_logprob else None
        else:
            probs = torch.softmax(logits / batch_info.temperatures, dim=-1)
            next_ids = _sample(probs, logits, batch_info)
            logprobs = _sampled_logprobs(probs, batch_info) if return_logprob else None
        if logprobs is None:
            return SampleOutput(next_ids)
        chosen = logprobs.gather(1, next_ids.unsqueeze(1)).squeeze(1)
        top = None
        if top_logprobs_nums is not None and any(k > 0 for k in top_logprobs_nums):
            top = get_top_logprobs(logprobs, top_logprobs_nums)
        return SampleOutput(next_ids, chosen, top)

    __call__ = forward

    def _biased(self, logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        # Columns past vocab_size are padding of the LM head, never real tokens.
        logits = logits[:, : info.vocab_size].float()
        if info.has_logits_bias or self.enable_nan_detection:
            logits = logits.clone()  # the bias works in place; the model's logits stay intact
        info.apply_logits_bias(logits)
        if self.enable_nan_detection and torch.isnan(logits).any():
            logger.warning("Detected NaN in the logits; replacing them with -1e5.")
            logits.masked_fill_(torch.isnan(logits), -1e5)
        return logits


def _check_inputs(logits: torch.Tensor, info: SamplingBatchInfo, top_nums: Optional[Sequence[int]]) -> None:
    if logits.dim() != 2 or logits.shape[0] != info.batch_size:
        raise ValueError(f"logits must be [batch_size={info.batch_size}, vocab], got {tuple(logits.shape)}.")
    if logits.shape[1] < info.vocab_size:
        raise ValueError(f"logits has {logits.shape[1]} columns, fewer than vocab_size {info.vocab_size}.")
    if top_nums is not None and len(top_nums) != info.batch_size:
        raise ValueError(f"top_logprobs_nums must have {info.batch_size} entries, got {len(top_nums)}.")


def _clamp(logprobs: torch.Tensor) -> torch.Tensor:
    # log(0) = -inf is not valid JSON; clamp to the most negative float instead.
    return logprobs.clamp_min(torch.finfo(logprobs.dtype).min)


def _sampled_logprobs(probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    # Greedy rows use top_p 1: their logprobs are then the raw log_softmax (temperature 1), the
    # same numbers an all-greedy batch reports.
    top_ps = info.top_ps.masked_fill(info.is_greedy, 1.0)
    return _clamp(torch.log(top_p_renormalize(probs, top_ps)))


# --------------------------------------------------------------------- filtering


def top_p_renormalize(probs: torch.Tensor, top_ps: torch.Tensor) -> torch.Tensor:
    """Zero the tokens outside each row's top-p nucleus and renormalize (for logprobs)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    drop = (sorted_p.cumsum(dim=-1) - sorted_p) > top_ps.unsqueeze(1)
    drop &= (top_ps < 1.0).unsqueeze(1)  # top_p = 1 keeps all, even past float rounding
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    sorted_p = sorted_p / sorted_p.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter_(1, order, sorted_p)


def filter_probs(probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    """Probabilities with top-k, then top-p, then min-p applied (unnormalized weights)."""
    flags = info.flags
    if not (flags.need_top_k or flags.need_top_p or flags.need_min_p):
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if flags.need_top_k:
        ranks = torch.arange(probs.shape[1], device=probs.device).unsqueeze(0)
        sorted_p = sorted_p.masked_fill(ranks >= info.top_ks.unsqueeze(1), 0.0)
    if flags.need_top_p:
        # Nucleus over the top-k survivors, renormalized: keep a token if the mass above it
        # has not reached top_p yet (the first token always stays).
        mass_above = (sorted_p.cumsum(dim=-1) - sorted_p) / sorted_p.sum(dim=-1, keepdim=True)
        drop = (mass_above > info.top_ps.unsqueeze(1)) & (info.top_ps < 1.0).unsqueeze(1)
        sorted_p = sorted_p.masked_fill(drop, 0.0)
    if flags.need_min_p:
        threshold = sorted_p[:, :1] * info.min_ps.unsqueeze(1)
        sorted_p = sorted_p.masked_fill(sorted_p < threshold, 0.0)
    return torch.zeros_like(probs).scatter_(1, order, sorted_p)


# --------------------------------------------------------------------- drawing


def _sample(probs: torch.Tensor, logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    weights = filter_probs(probs, info)
    next_ids = _multinomial(weights, info)
    return torch.where(info.is_greedy, torch.argmax(logits, dim=-1), next_ids)


def _multinomial(weights: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    if not info.flags.has_seed:
        return torch.multinomial(weights, 1).squeeze(1)
    next_ids = torch.zeros(weights.shape[0], dtype=torch.int64, device=weights.device)
    seeds = info.seeds
    unseeded = [i for i, seed in enumerate(seeds) if seed is None]
    if unseeded:
        rows = to_device(unseeded, torch.int64, weights.device)
        next_ids[rows] = torch.multinomial(weights[rows], 1).squeeze(1)
    for i, seed in enumerate(seeds):
        if seed is not None:
            generator = torch.Generator(device=weights.device)
            generator.manual_seed(step_seed(seed, info.output_lens[i]))
            next_ids[i] = torch.multinomial(weights[i], 1, generator=generator)[0]
    return next_ids


def step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit generator seed for (request seed, decode step) (splitmix64 finalizer).

    Mixing in the step gives every step fresh randomness while a rerun of the same request
    replays the same sequence.
    """
    x = (seed * 0x9E3779B97F4A7C15 + step + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1


# --------------------------------------------------------------------- logprob helpers


def compute_input_logprobs(logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """Raw log_softmax of `logits` [N, vocab] at `next_ids` [N] (prompt logprobs)."""
    if logits.dim() != 2 or next_ids.shape != (logits.shape[0],):
        raise ValueError(
            f"logits must be [N, vocab] and next_ids [N], got {tuple(logits.shape)} and {tuple(next_ids.shape)}."
        )
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, next_ids.long().unsqueeze(1)).squeeze(1)


def get_top_logprobs(logprobs: torch.Tensor, k_list: Sequence[int]) -> TopLogprobs:
    """Per row i of `logprobs` [N, vocab]: its k_list[i] best (values, token ids), best first."""
    if len(k_list) != logprobs.shape[0]:
        raise ValueError(f"k_list must have {logprobs.shape[0]} entries, got {len(k_list)}.")
    if any(k < 0 for k in k_list):
        raise ValueError(f"k_list entries must be >= 0, got {list(k_list)}.")
    k_max = min(max(k_list, default=0), logprobs.shape[1])
    if k_max == 0:
        return [([], []) for _ in k_list]
    values, ids = logprobs.topk(k_max, dim=-1)
    values, ids = values.tolist(), ids.tolist()  # one transfer for the whole batch
    return [(values[i][:k], ids[i][:k]) for i, k in enumerate(k_list)]
