"""PrefillAdder: decides which waiting requests join the next prefill batch.

Budgets (SGLang's): total KV tokens (free + evictable cache, minus what running requests are
expected to decode, scaled by the adaptive new-token ratio), `max_prefill_tokens` per batch, and
`chunked_prefill_size` per batch (a request longer than what is left is truncated to a chunk and
continues next round). A lone request is always admitted if it fits in memory, even when it is
over `max_prefill_tokens`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from sgl.runtime.scheduler.req import Req

if TYPE_CHECKING:
    from sgl.runtime.scheduler.scheduler import Scheduler

MAX_RESERVED_PER_REQ = 4096


class PrefillAdder:
    def __init__(self, scheduler: "Scheduler", reserved_decode_tokens: float):
        self.sched = scheduler
        self.tree_cache = scheduler.tree_cache
        self.reserved = reserved_decode_tokens
        self.rem_input_tokens = scheduler.server_args.max_prefill_tokens
        self.rem_chunk_tokens = scheduler.chunked_prefill_size
        self.can_run: List[Req] = []
        self.admitted_tokens = 0.0

    def rem_total_tokens(self) -> float:
        kv = self.sched.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        return kv - self.reserved - self.admitted_tokens

    def _fits_request_slots(self) -> bool:
        return len(self.can_run) < self.sched.req_to_token_pool.available_size()

    def add_chunked_req(self, req: Req) -> bool:
        """The request whose prompt is mid-prefill goes first; its cached prefix is already locked."""
        req.init_next_round_input(self.tree_cache, rematch=False)
        self._truncate_to_chunk(req)
        if req.extend_input_len >= self.rem_total_tokens():
            return False
        self._admit(req, reserve_output=not req.is_chunked)
        return True

    def add_one_req(self, req: Req) -> bool:
        """Admit `req` if the budgets allow; False means the batch is full."""
        if not self._fits_request_slots():
            return False
        req.init_next_round_input(self.tree_cache)
        future = min(req.remaining_new_tokens(), MAX_RESERVED_PER_REQ)
        if req.extend_input_len + future >= self.rem_total_tokens() + self._own_prefix_credit(req):
            return False
        if req.extend_input_len > self.rem_input_tokens and self.can_run:
            return False
        if self.rem_chunk_tokens is not None and self.rem_chunk_tokens <= 0:
            return False
        if self._never_chunk(req) and self.rem_chunk_tokens is not None and req.extend_input_len > self.rem_chunk_tokens and self.can_run:
            return False
        self.tree_cache.inc_lock_ref(req.last_node)
        if not self._never_chunk(req):
            self._truncate_to_chunk(req)
        self._admit(req, reserve_output=not req.is_chunked)
        return True

    def _own_prefix_credit(self, req: Req) -> int:
        # Locking the matched prefix makes it non-evictable; it was counted as free before.
        return 0 if req.last_node is None or getattr(req.last_node, "lock_ref", 1) > 0 else -len(req.prefix_indices)

    @staticmethod
    def _never_chunk(req: Req) -> bool:
        # Input logprobs are computed over one forward, so such prompts are not split.
        return req.return_logprob and req.logprob_start_len < len(req.origin_input_ids) - 1

    def _truncate_to_chunk(self, req: Req) -> None:
        limit = self.rem_chunk_tokens
        if limit is not None and req.extend_input_len > limit:
            req.extend_input_len = limit
            req.fill_ids = req.fill_ids[: len(req.prefix_indices) + limit]
            req.is_chunked = 1
        else:
            req.is_chunked = 0

    def _admit(self, req: Req, reserve_output: bool) -> None:
        future = min(req.remaining_new_tokens(), MAX_RESERVED_PER_REQ) if reserve_output else 0
        self.can_run.append(req)
        self.admitted_tokens += req.extend_input_len + future
        self.rem_input_tokens -= req.extend_input_len
        if self.rem_chunk_tokens is not None:
            self.rem_chunk_tokens -= req.extend_input_len
