"""SamplingBatchInfo: the per-request sampling state of one batch, as device tensors.

Built once per prefill batch from the requests' SamplingParams, then carried along with the
running decode batch: `merge` appends newly prefilled requests, `filter` drops finished ones, and
`cumulate_output_tokens` records each sampled token (penalty counts, min_new_tokens progress and
the step number that seeded requests mix into their generator).

Greedy is decided per request exactly as `SamplingParams.normalize` rewrites it (temperature
< 1e-6 or top_k == 1), so params work here whether or not they were normalized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Optional, Sequence

import torch

from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.executor.host_to_device import to_device
from sgl.runtime.sampling.penalties import Penalizer


@dataclass
class _Flags:
    """Host-side facts about the batch, so the sampler picks its path without a device sync."""

    is_all_greedy: bool
    need_top_k: bool
    need_top_p: bool
    need_min_p: bool
    has_seed: bool

    @classmethod
    def of(cls, params: Sequence[SamplingParams], vocab_size: int) -> "_Flags":
        sampled = [p for p in params if not p.is_greedy]
        return cls(
            is_all_greedy=not sampled,
            need_top_k=any(p.effective_top_k() < vocab_size for p in sampled),
            need_top_p=any(p.top_p < 1.0 for p in sampled),
            need_min_p=any(p.min_p > 0.0 for p in sampled),
            has_seed=any(p.seed is not None for p in sampled),
        )


@dataclass
class SamplingBatchInfo:
    temperatures: torch.Tensor  # [bs, 1] float32 (1.0 for greedy requests)
    top_ps: torch.Tensor  # [bs] float32
    top_ks: torch.Tensor  # [bs] int64, clamped to the vocab size (1 for greedy)
    min_ps: torch.Tensor  # [bs] float32
    is_greedy: torch.Tensor  # [bs] bool
    params: list[SamplingParams]  # host copies: flags, seeds
    output_lens: list[int]  # output tokens per request so far (the seeded generators' step)
    penalizer: Penalizer
    vocab_size: int
    device: torch.device
    # Grammar mask for this step, True = token not allowed; set by constrained decoding.
    vocab_mask: Optional[torch.Tensor] = None
    flags: _Flags = field(init=False)

    def __post_init__(self) -> None:
        self.flags = _Flags.of(self.params, self.vocab_size)

    @classmethod
    def from_params(
        cls,
        params: Sequence[SamplingParams],
        vocab_size: int,
        device: torch.device | str = "cpu",
        *,
        prompt_token_ids: Optional[Sequence[Sequence[int]]] = None,
        output_token_ids: Optional[Sequence[Sequence[int]]] = None,
        eos_token_ids: Collection[int] = (),
    ) -> "SamplingBatchInfo":
        """Tensors for a batch of requests.

        `prompt_token_ids` feeds the repetition penalty (None = no prompt tokens);
        `output_token_ids` are tokens already generated (a retracted request resuming);
        `eos_token_ids` are masked, with each request's stop_token_ids, until min_new_tokens.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}.")
        params = list(params)
        if not all(isinstance(p, SamplingParams) for p in params):
            raise ValueError("params must be a list of SamplingParams.")
        device = torch.device(device)
        penalizer = Penalizer.from_params(
            params,
            vocab_size,
            device,
            prompt_token_ids=prompt_token_ids,
            output_token_ids=output_token_ids,
            eos_token_ids=eos_token_ids,
        )
        outputs = output_token_ids if output_token_ids is not None else [[] for _ in params]
        return cls(
            temperatures=_floats([p.effective_temperature() for p in params], device).view(-1, 1),
            top_ps=_floats([p.top_p for p in params], device),
            top_ks=to_device([min(p.effective_top_k(), vocab_size) for p in params], torch.int64, device),
            min_ps=_floats([p.min_p for p in params], device),
            is_greedy=to_device([p.is_greedy for p in params], torch.bool, device),
            params=params,
            output_lens=[len(o) for o in outputs],
            penalizer=penalizer,
            vocab_size=vocab_size,
            device=device,
        )

    @property
    def batch_size(self) -> int:
        return len(self.params)

    @property
    def is_all_greedy(self) -> bool:
        return self.flags.is_all_greedy

    @property
    def need_min_p(self) -> bool:
        return self.flags.need_min_p

    @property
    def seeds(self) -> list[Optional[int]]:
        return [p.seed for p in self.params]

    def apply_logits_bias(self, logits: torch.Tensor) -> None:
        """Penalties, then the grammar mask, in place on `logits` [bs, vocab] float."""
        if self.penalizer.is_active:
            self.penalizer.apply(logits)
        if self.vocab_mask is not None:
            logits.masked_fill_(self.vocab_mask, float("-inf"))

    @property
    def has_logits_bias(self) -> bool:
        return self.penalizer.is_active or self.vocab_mask is not None

    def cumulate_output_tokens(self, next_token_ids: torch.Tensor) -> None:
        """Record the token each request just sampled; call once per sampling step."""
        if next_token_ids.numel() != self.batch_size:
            raise ValueError(
                f"next_token_ids must have {self.batch_size} entries, got {next_token_ids.numel()}."
            )
        self.output_lens = [n + 1 for n in self.output_lens]
        self.penalizer.cumulate_output_tokens(next_token_ids)

    def filter(self, keep_indices: Sequence[int] | torch.Tensor) -> None:
        """Keep only the requests at `keep_indices` (in that order)."""
        if isinstance(keep_indices, torch.Tensor):
            keep_list = [int(i) for i in keep_indices.tolist()]  # one device sync, not one per item
        else:
            keep_list = [int(i) for i in keep_indices]
        if any(i < 0 or i >= self.batch_size for i in keep_list):
            raise ValueError(f"keep_indices must be in [0, {self.batch_size}), got {keep_list}.")
        keep = to_device(keep_list, torch.int64, self.device)
        for name in ("temperatures", "top_ps", "top_ks", "min_ps", "is_greedy"):
            setattr(self, name, getattr(self, name)[keep])
        if self.vocab_mask is not None:
            self.vocab_mask = self.vocab_mask[keep]
        self.params = [self.params[i] for i in keep_list]
        self.output_lens = [self.output_lens[i] for i in keep_list]
        self.penalizer.filter(keep)
        self.flags = _Flags.of(self.params, self.vocab_size)

    def merge(self, other: "SamplingBatchInfo") -> None:
        """Append `other`'s requests (a freshly prefilled batch) after this batch's."""
        if other.vocab_size != self.vocab_size:
            raise ValueError(f"other has vocab_size {other.vocab_size}, this batch {self.vocab_size}.")
        for name in ("temperatures", "top_ps", "top_ks", "min_ps", "is_greedy"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name).to(self.device)]))
        self.vocab_mask = _merge_masks(self.vocab_mask, other.vocab_mask, self.batch_size, other.batch_size)
        self.params = self.params + other.params
        self.output_lens = self.output_lens + other.output_lens
        self.penalizer.merge(other.penalizer)
        self.flags = _Flags.of(self.params, self.vocab_size)


def _floats(values: list[float], device: torch.device) -> torch.Tensor:
    return to_device(values, torch.float32, device)


def _merge_masks(
    mine: Optional[torch.Tensor], theirs: Optional[torch.Tensor], my_rows: int, their_rows: int
) -> Optional[torch.Tensor]:
    if mine is None and theirs is None:
        return None
    like = mine if mine is not None else theirs
    mine = (
        mine
        if mine is not None
        else torch.zeros(my_rows, like.shape[1], dtype=torch.bool, device=like.device)
    )
    theirs = (
        theirs
        if theirs is not None
        else torch.zeros(their_rows, like.shape[1], dtype=torch.bool, device=like.device)
    )
    return torch.cat([mine, theirs.to(mine.device)])
