"""Logits from selected hidden states.

The matmul runs in the model dtype (a float32 copy of a 128k-row LM head would cost more memory
than it buys); its result is returned in float32 because sampling and logprobs need the range.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sgl.runtime.distributed.parallel_state import all_gather
from sgl.runtime.executor.forward_batch import ForwardBatch


class LogitsProcessor(nn.Module):
    def __init__(self, vocab_size: int, final_logit_softcapping: Optional[float] = None):
        super().__init__()
        self.vocab_size = vocab_size
        self.final_logit_softcapping = final_logit_softcapping

    def forward(self, hidden_states: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        """hidden_states [N, hidden] -> float32 logits [N, vocab_size]."""
        if hidden_states.dim() != 2:
            raise ValueError(f"hidden_states must be [N, hidden], got shape {tuple(hidden_states.shape)}")
        # under tensor parallelism each rank holds a slice of the vocabulary (the padding rows past
        # its end are cut off below)
        logits = all_gather(lm_head.matmul(hidden_states))
        logits = logits[:, : self.vocab_size].float()
        if self.final_logit_softcapping:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits


def last_token_indices(forward_batch: ForwardBatch) -> torch.Tensor:
    """Rows of the forward's hidden states that produce next-token logits: every token of a decode,
    the last new token of each request of an extend."""
    device = forward_batch.input_ids.device
    if not forward_batch.forward_mode.is_extend():
        return torch.arange(forward_batch.num_tokens, device=device)
    if forward_batch.extend_seq_lens is None:
        raise ValueError("an extend ForwardBatch needs extend_seq_lens to select last tokens")
    return torch.cumsum(forward_batch.extend_seq_lens.to(device), dim=0) - 1

