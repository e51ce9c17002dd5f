"""Req: one generation request as the scheduler sees it (ids, cache state, output, logprobs)."""

from __future__ import annotations

from typing import Any, List, Optional

import torch

from sgl.runtime.sampling.finish_reason import FinishAbort, FinishLength, FinishMatchedStr, FinishMatchedToken


class Req:
    def __init__(
        self,
        rid: str,
        origin_input_ids: List[int],
        sampling_params: Any,
        origin_input_text: Optional[str] = None,
        return_logprob: bool = False,
        logprob_start_len: int = -1,
        top_logprobs_num: int = 0,
        stream: bool = False,
    ):
        self.rid = rid
        self.origin_input_text = origin_input_text
        self.origin_input_ids = list(origin_input_ids)
        self.sampling_params = sampling_params
        self.stream = stream
        self.output_ids: List[int] = []
        self.fill_ids: List[int] = []
        self.finished_reason = None
        self.to_abort: Optional[str] = None

        # cache state
        self.req_pool_idx: Optional[int] = None
        self.prefix_indices = torch.empty(0, dtype=torch.int64)
        self.last_node = None
        self.extend_input_len = 0
        self.kv_allocated_len = 0
        self.is_chunked = 0  # > 0 while the prompt is being prefilled in chunks
        self.cached_tokens = 0
        self.already_computed = 0
        self.grammar = None
        self.structural = None  # StructuralState of a request with a structural tag
        # overlap scheduler: slot of the device-side future map holding this request's newest
        # token while the host has not read it yet (None when output_ids is up to date)
        self.future_slot: Optional[int] = None

        # logprobs
        self.return_logprob = return_logprob
        self.top_logprobs_num = top_logprobs_num
        if logprob_start_len == -1 or logprob_start_len is None:
            logprob_start_len = len(origin_input_ids) - 1
        self.logprob_start_len = logprob_start_len
        self.input_token_logprobs: Optional[list] = None  # [(lp|None, id)]
        self.input_top_logprobs: Optional[list] = None
        self.output_token_logprobs: list = []
        self.output_top_logprobs: list = []

        # constrained decoding: forward passes that sampled for this request, and output ids
        # rewritten by jump-forward (sent whole to the detokenizer)
        self.num_sampling_forwards = 0
        self.rewrite = False
        # bumped when jump-forward rewrites the output: a decode batch launched before that holds
        # a token for the old output, which is dropped
        self.epoch = 0

        # pooling models: the prompt's pooled reduction so far (over its chunks), the result, and
        # whether every token's hidden state is needed (mean pooling: no cached prefix is skipped)
        self.pooled: Optional[torch.Tensor] = None
        self.embedding: Optional[List[float]] = None
        self.pool_all_tokens = False

        # streaming bookkeeping
        self.send_offset = 0
        self.send_logprob_offset = 0

    # ---- rounds ---------------------------------------------------------------------------
    def max_prefix_len(self) -> int:
        """At least one token is always recomputed so the next-token logits exist."""
        if self.pool_all_tokens:
            return 0
        n = len(self.origin_input_ids) + len(self.output_ids) - 1
        if self.return_logprob and self.logprob_start_len >= 0:
            n = min(n, self.logprob_start_len)
        return max(n, 0)

    def init_next_round_input(self, tree_cache, rematch: bool = True) -> None:
        self.fill_ids = self.origin_input_ids + self.output_ids
        if rematch:
            key = self.fill_ids[: self.max_prefix_len()]
            self.prefix_indices, self.last_node = tree_cache.match_prefix(key)
        self.extend_input_len = len(self.fill_ids) - len(self.prefix_indices)

    def reset_for_retract(self) -> None:
        self.prefix_indices = torch.empty(0, dtype=torch.int64)
        self.last_node = None
        self.extend_input_len = 0
        self.is_chunked = 0
        self.req_pool_idx = None
        self.kv_allocated_len = 0

    # ---- lengths --------------------------------------------------------------------------
    def seqlen(self) -> int:
        return len(self.origin_input_ids) + len(self.output_ids)

    def remaining_new_tokens(self) -> int:
        return max(self.sampling_params.max_new_tokens - len(self.output_ids), 0)

    # ---- finish ---------------------------------------------------------------------------
    def finished(self) -> bool:
        return self.finished_reason is not None

    def check_finished(self, eos_token_ids: set, tokenizer=None) -> None:
        """SGLang's order: abort, length, stop token, stop string."""
        if self.finished():
            return
        sp = self.sampling_params
        if self.to_abort is not None:
            self.finished_reason = FinishAbort(self.to_abort)
            return
        if len(self.output_ids) >= sp.max_new_tokens:
            self.finished_reason = FinishLength(length=sp.max_new_tokens)
            return
        if not self.output_ids:
            return
        last = self.output_ids[-1]
        if not sp.ignore_eos and (last in (sp.stop_token_ids or ()) or last in eos_token_ids):
            self.finished_reason = FinishMatchedToken(matched=last)
            return
        if self.grammar is not None and self.grammar.is_terminated():
            # the grammar took its end token: nothing more can follow, ignore_eos or not
            self.finished_reason = FinishMatchedToken(matched=last)
            return
        if sp.stop_strs and tokenizer is not None:
            tail = tokenizer.decode(self.output_ids[-(sp.stop_str_max_len + 1) :])
            for stop in sp.stop_strs:
                if stop in tail:
                    self.finished_reason = FinishMatchedStr(matched=stop)
                    return

    def __repr__(self) -> str:
        return f"Req(rid={self.rid}, input={len(self.origin_input_ids)}, output={len(self.output_ids)})"
