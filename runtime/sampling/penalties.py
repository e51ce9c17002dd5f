"""Penalizer: per-request logit penalties for a running batch (SGLang's penalizer orchestrator).

Four penalties, applied to raw logits before temperature:
* frequency (additive): `logit -= frequency_penalty * count(token in output)`;
* presence (additive): `logit -= presence_penalty * [token in output]`;
* repetition (multiplicative, over prompt and output tokens): positive logits are divided by
  the penalty, negative ones multiplied (so a penalty > 1 always makes a seen token less likely);
* min_new_tokens: EOS and stop token ids are -inf until the request has that many output tokens.

State lives in a dict of tensors, each with a neutral fill value. A tensor exists only when some
request of the batch needs it, so a batch without penalties allocates nothing of size
[bs, vocab]. Requests join (`merge`) and leave (`filter`) the running batch; a request from a
batch that did not track some tensor gets the neutral fill, which is correct because its own
penalty for that component is the neutral value.
"""

from __future__ import annotations

from typing import Collection, Optional, Sequence

import torch

from sgl.runtime.executor.host_to_device import move, to_device

# Neutral value per state tensor: what a request that does not use the penalty holds.
_FILL = {
    "frequency": 0.0,  # [bs, 1]
    "presence": 0.0,  # [bs, 1]
    "repetition": 1.0,  # [bs, 1]
    "counts": 0.0,  # [bs, vocab] output token counts
    "prompt_mask": False,  # [bs, vocab] token occurs in the prompt
    "min_new": 0,  # [bs]
    "out_lens": 0,  # [bs] output tokens so far (only for min_new_tokens)
    "stop_mask": False,  # [bs, vocab] EOS / stop ids that min_new_tokens suppresses
}
# Keeps a repetition penalty of 0 (allowed by SGLang's range) from dividing by zero.
_MIN_REPETITION = 1e-6


class Penalizer:
    def __init__(self, batch_size: int, tensors: Optional[dict[str, torch.Tensor]] = None) -> None:
        self.batch_size = batch_size
        self.tensors: dict[str, torch.Tensor] = tensors or {}

    @classmethod
    def from_params(
        cls,
        params: Sequence,
        vocab_size: int,
        device: torch.device | str = "cpu",
        *,
        prompt_token_ids: Optional[Sequence[Sequence[int]]] = None,
        output_token_ids: Optional[Sequence[Sequence[int]]] = None,
        eos_token_ids: Collection[int] = (),
    ) -> "Penalizer":
        """State for `params` (SamplingParams); `output_token_ids` resumes retracted requests."""
        bs = len(params)
        prompts = _per_request_ids(prompt_token_ids, bs, "prompt_token_ids")
        outputs = _per_request_ids(output_token_ids, bs, "output_token_ids")
        t: dict[str, torch.Tensor] = {}
        additive = any(p.frequency_penalty != 0 or p.presence_penalty != 0 for p in params)
        repetition = any(p.repetition_penalty != 1 for p in params)
        if additive:
            t["frequency"] = _column([p.frequency_penalty for p in params], device)
            t["presence"] = _column([p.presence_penalty for p in params], device)
        if repetition:
            t["repetition"] = _column([max(p.repetition_penalty, _MIN_REPETITION) for p in params], device)
            t["prompt_mask"] = _token_mask(prompts, vocab_size, device, "prompt_token_ids")
        if additive or repetition:
            t["counts"] = _token_counts(outputs, vocab_size, device)
        if any(p.min_new_tokens > 0 for p in params):
            stop_ids = [sorted(set(p.stop_token_ids or ()) | set(eos_token_ids)) for p in params]
            t["min_new"] = to_device([p.min_new_tokens for p in params], torch.int64, device)
            t["out_lens"] = to_device([len(o) for o in outputs], torch.int64, device)
            t["stop_mask"] = _token_mask(stop_ids, vocab_size, device, "stop_token_ids")
        return cls(bs, t)

    @property
    def is_active(self) -> bool:
        return bool(self.tensors)

    def apply(self, logits: torch.Tensor) -> None:
        """Penalize `logits` [bs, vocab] float in place."""
        t = self.tensors
        if "frequency" in t:
            counts = t["counts"]
            logits -= t["frequency"] * counts + t["presence"] * (counts > 0)
        if "repetition" in t:
            seen = t["prompt_mask"] | (t["counts"] > 0)
            scale = torch.where(seen, t["repetition"], torch.ones_like(t["repetition"]))
            logits.copy_(torch.where(logits > 0, logits / scale, logits * scale))
        # -inf last: scaling an -inf logit by a repetition penalty of 0 would give NaN.
        if "min_new" in t:
            active = (t["out_lens"] < t["min_new"]).unsqueeze(1)
            logits.masked_fill_(t["stop_mask"] & active, float("-inf"))

    def cumulate_output_tokens(self, next_token_ids: torch.Tensor) -> None:
        """Count one new output token per request."""
        t = self.tensors
        if "counts" in t:
            rows = torch.arange(self.batch_size, device=t["counts"].device)
            t["counts"][rows, next_token_ids.to(t["counts"].device)] += 1
        if "out_lens" in t:
            t["out_lens"] += 1

    def filter(self, keep: torch.Tensor) -> None:
        """Keep only the rows `keep` (int64 indices), in that order."""
        self.tensors = {name: x[keep.to(x.device)] for name, x in self.tensors.items()}
        self.batch_size = int(keep.numel())

    def merge(self, other: "Penalizer") -> None:
        """Append `other`'s requests after this batch's."""
        merged = {}
        for name in [n for n in _FILL if n in self.tensors or n in other.tensors]:
            mine, theirs = self.tensors.get(name), other.tensors.get(name)
            like = mine if mine is not None else theirs
            mine = mine if mine is not None else _neutral(name, like, self.batch_size)
            theirs = theirs if theirs is not None else _neutral(name, like, other.batch_size)
            merged[name] = torch.cat([mine, theirs.to(mine.device)], dim=0)
        self.tensors = merged
        self.batch_size += other.batch_size


def _neutral(name: str, like: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.full((rows, *like.shape[1:]), _FILL[name], dtype=like.dtype, device=like.device)


def _column(values: list[float], device: torch.device | str) -> torch.Tensor:
    return to_device(values, torch.float32, device).view(-1, 1)


def _per_request_ids(ids: Optional[Sequence[Sequence[int]]], bs: int, name: str) -> list[list[int]]:
    if ids is None:
        return [[] for _ in range(bs)]
    if len(ids) != bs:
        raise ValueError(f"{name} must have one list per request ({bs}), got {len(ids)}.")
    return [list(x) for x in ids]


def _flat_index(id_lists: list[list[int]], vocab_size: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.repeat_interleave(
        torch.arange(len(id_lists)), torch.tensor([len(x) for x in id_lists], dtype=torch.int64)
    )
    cols = torch.tensor([t for ids in id_lists for t in ids], dtype=torch.int64)
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= vocab_size):
        raise ValueError(f"{name} must hold token ids in [0, {vocab_size}).")
    return rows, cols


def _token_mask(
    id_lists: list[list[int]], vocab_size: int, device: torch.device | str, name: str
) -> torch.Tensor:
    rows, cols = _flat_index(id_lists, vocab_size, name)
    mask = torch.zeros(len(id_lists), vocab_size, dtype=torch.bool)
    mask[rows, cols] = True
    return move(mask, device)


def _token_counts(id_lists: list[list[int]], vocab_size: int, device: torch.device | str) -> torch.Tensor:
    rows, cols = _flat_index(id_lists, vocab_size, "output_token_ids")
    counts = torch.zeros(len(id_lists), vocab_size, dtype=torch.float32)
    counts.index_put_((rows, cols), torch.ones(cols.numel()), accumulate=True)
    return move(counts, device)
