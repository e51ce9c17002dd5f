"""PrefillAdder: decides which waiting requests join the next prefill batch.

Budgets (SGLang's): total KV tokens (free + evictable cache, minus what running requests are
expected to decode), `max_prefill_tokens` per batch, and `chunked_prefill_size` per batch (a request
longer than what is left is truncated to a chunk and continues next round). A lone request is always
admitted if it fits in memory, even when it is over `max_prefill_tokens`.

What a decoding request is expected to need: one that can stop early (EOS, stop token or string)
reserves the adaptive `new_token_ratio` of what it has left. One that runs to its length limit
(`ignore_eos`, no stop string) needs all of it, but it also frees its KV at a known step, and
that memory serves requests still decoding: such requests go into a `DecodeOutlook`, whose peak
over the coming steps (not the sum of everything left) is what must fit. With mixed output lengths
this admits more requests at once without ever needing a retraction.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, List, Sequence, Tuple

from sgl.runtime.scheduler.req import Req

if TYPE_CHECKING:
    from sgl.runtime.scheduler.scheduler import Scheduler

MAX_RESERVED_PER_REQ = 4096


class DecodeOutlook:
    """The peak extra KV of requests that decode to a known end.

    Each request is (left, release): it takes one slot per step for `left` more steps, then frees
    `release` slots (everything it holds that nobody else locks; 0 when it outlives the horizon).
    Sorted by `left`, the usage at the step the k-th one ends is the net of those already ended
    plus `left_k` for each one still running; the peak is the largest of these.
    """

    def __init__(self, items: Sequence[Tuple[int, int]] = ()):
        self.items = sorted(items)

    def peak(self, extra: Tuple[int, int] = None) -> int:
        items = self.items
        if extra is not None:
            items = list(items)
            bisect.insort(items, extra)
        peak = ended = 0
        n = len(items)
        for k, (left, release) in enumerate(items):
            peak = max(peak, ended + (n - k) * left)
            ended += left - release
        return peak

    def add(self, item: Tuple[int, int]) -> None:
        bisect.insort(self.items, item)


def runs_to_limit(req: Req) -> bool:
    """Only the length limit ends it (an abort or a stop token can only end it sooner)."""
    return req.sampling_params.ignore_eos and not req.sampling_params.stop_strs


def reserved_future(req: Req) -> int:
    return min(req.remaining_new_tokens(), MAX_RESERVED_PER_REQ)


def outlook_item(req: Req, held: int) -> Tuple[int, int]:
    """(left, release) of a request that runs to its limit and holds `held` slots nobody else
    locks: at its end it frees those and its output; nothing within the horizon when what it has
    left is longer than the reservation."""
    left = reserved_future(req)
    return left, (held + left if left == req.remaining_new_tokens() else 0)


class PrefillAdder:
    def __init__(self, scheduler: "Scheduler", reserved_decode_tokens: float, outlook: DecodeOutlook):
        """`reserved_decode_tokens`: what the running requests that may stop early are expected
        to decode; `outlook`: the running requests that decode to their limit."""
        self.sched = scheduler
        self.tree_cache = scheduler.tree_cache
        self.reserved = reserved_decode_tokens
        self.outlook = outlook
        self.outlook_peak = outlook.peak()
        self.rem_input_tokens = scheduler.server_args.max_prefill_tokens
        self.rem_chunk_tokens = scheduler.chunked_prefill_size
        self.can_run: List[Req] = []
        self.admitted_tokens = 0.0

    def share_with_decode(self, num_decode: int) -> None:
        """Mixed chunked prefill: the running requests' decode tokens ride in this batch's forward
        and take their share of its token budgets; at least half the chunk stays for prompts, so
        a large running batch cannot starve the queue."""
        self.rem_input_tokens -= num_decode
        if self.rem_chunk_tokens is not None:
            self.rem_chunk_tokens = max(self.rem_chunk_tokens - num_decode, (self.rem_chunk_tokens + 1) // 2)

    def rem_total_tokens(self) -> float:
        kv = self.sched.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        return kv - self.reserved - self.admitted_tokens - self.outlook_peak

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
        if req.extend_input_len + self._future_cost(req) >= self.rem_total_tokens() + self._own_prefix_credit(req):
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

    @staticmethod
    def _outlook_item(req: Req) -> Tuple[int, int]:
        # it holds the tokens it computes now (an earlier chunk of its prompt is not counted: the
        # estimate only errs towards keeping memory free)
        return outlook_item(req, req.extend_input_len)

    def _future_cost(self, req: Req) -> float:
        """What admitting `req` adds to the decode reservation, beyond its prompt."""
        if runs_to_limit(req):
            return self.outlook.peak(self._outlook_item(req)) - self.outlook_peak
        return reserved_future(req)

    def _admit(self, req: Req, reserve_output: bool) -> None:
        future = 0
        if reserve_output and runs_to_limit(req):
            self.outlook.add(self._outlook_item(req))
            self.outlook_peak = self.outlook.peak()
        elif reserve_output:
            future = reserved_future(req)
        self.can_run.append(req)
        self.admitted_tokens += req.extend_input_len + future
        self.rem_input_tokens -= req.extend_input_len
        if self.rem_chunk_tokens is not None:
            self.rem_chunk_tokens -= req.extend_input_len
