"""Constrained decoding in the scheduler: the grammar queue, batched masks, jump-forward.

A request with `regex` / `json_schema` / `ebnf` waits in the grammar queue while its grammar
compiles on the backend's thread pool; a compile error fails that request alone (an abort with
status 400). Each forward fills one packed bitmask for the whole batch. After a token is accepted,
a state that forces text (the compressed FSM) is jumped over: the forced text is appended, the
last few output tokens are re-tokenized together with it so the ids are the tokenizer's own, and
the request goes back to the queue to prefill the new tokens in one extend.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch

from sgl.runtime.scheduler.req import Req

logger = logging.getLogger(__name__)

# Output tokens re-tokenized together with the forced text, so a token that would merge across
# the boundary is rebuilt.
RETOKENIZE_TAIL = 4


def grammar_key(params) -> Optional[Tuple[str, str]]:
    """(kind, text) of a request's constraint, or None."""
    if getattr(params, "json_schema", None) is not None:
        return "json", params.json_schema
    if getattr(params, "regex", None) is not None:
        return "regex", params.regex
    if getattr(params, "ebnf", None) is not None:
        return "ebnf", params.ebnf
    return None


class GrammarManager:
    def __init__(self, tokenizer, vocab_size: int, whitespace_pattern: Optional[str], enable_jump_forward: bool,
                 backend: str = "outlines"):
        """`backend` is --grammar-backend: "outlines" (built in) or "xgrammar" (optional package)."""
        from sgl.runtime.constrained import create_grammar_backend

        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        # isolate: a grammar whose automaton needs too much memory fails its request, not the scheduler
        self.backend = create_grammar_backend(backend, tokenizer, vocab_size, whitespace_pattern=whitespace_pattern,
                                              isolate=True)
        self.enable_jump_forward = enable_jump_forward and tokenizer is not None
        self.queue: List[Tuple[Req, object]] = []
        self.num_jumps = 0
        self.num_forced_tokens = 0

    # ---- compilation queue ----------------------------------------------------------------
    def submit(self, req: Req) -> bool:
        """Start compiling req's grammar; False when the request has no constraint."""
        key = grammar_key(req.sampling_params)
        if key is None:
            return False
        self.queue.append((req, self.backend.get_or_compile(*key)))
        return True

    def poll(self) -> Tuple[List[Req], List[Tuple[Req, str]]]:
        """Requests whose grammar is ready, and (request, error) for those that failed."""
        ready, failed, waiting = [], [], []
        for req, fut in self.queue:
            if not fut.done():
                waiting.append((req, fut))
            elif fut.exception() is not None:
                failed.append((req, str(fut.exception())))
            else:
                req.grammar = fut.result()
                ready.append(req)
        self.queue = waiting
        return ready, failed

    def remove(self, rid: str) -> Optional[Req]:
        for i, (req, _) in enumerate(self.queue):
            if req.rid == rid:
                del self.queue[i]
                return req
        return None

    def reset(self) -> None:
        self.backend.reset()

    # ---- masks ----------------------------------------------------------------------------
    def apply_masks(self, reqs: Sequence[Req], logits: torch.Tensor, skip: Optional[Sequence[bool]] = None) -> None:
        """Mask, in place, the rows of ``logits`` whose request has a grammar (blocked -> -inf).

        Only constrained rows are filled and touched: one packed row each on the host, then one
        kernel on the device, so a constrained request costs its own row, not the batch's.
        ``skip[i]`` leaves row i unmasked (its token will be dropped: a request that finished or
        was jumped forward while this batch was in flight)."""
        rows = [i for i, r in enumerate(reqs) if r.grammar is not None and not (skip is not None and skip[i])]
        if not rows:
            return
        from sgl.runtime.constrained import BaseGrammar
        from sgl.runtime.constrained.vocab_mask import apply_token_bitmask_rows_

        mask = BaseGrammar.allocate_vocab_mask(self.vocab_size, len(rows))
        for j, i in enumerate(rows):
            req = reqs[i]
            canonical = self._forced_canonical(req)
            if canonical is not None and canonical[: len(req.output_ids)] == req.output_ids:
                _allow_only(mask, j, canonical[len(req.output_ids)])
            else:
                req.grammar.fill_vocab_mask(mask, j)
        index = torch.tensor(rows, dtype=torch.int32)
        if logits.is_cuda:
            index = index.pin_memory()
        with torch.inference_mode():  # the forward's logits are inference tensors
            apply_token_bitmask_rows_(logits, BaseGrammar.move_vocab_mask(mask, logits.device), index)

    def _forced_canonical(self, req: Req) -> Optional[List[int]]:
        """Output + forced text in the tokenizer's own tokens, when the state forces text.

        Decoding a forced span token by token lets the model spell it in odd pieces ("f", "ul",
        "l"); allowing only the canonical next token makes plain decoding emit exactly the ids
        that jump-forward would append, so both give the same text.
        """
        if self.tokenizer is None or req.grammar.is_terminated() or req.finished():
            return None
        helper = req.grammar.try_jump_forward(self.tokenizer)
        if helper is None:
            return None
        forced, _ = req.grammar.jump_forward_str_state(helper)
        canonical = self._retokenize(req.output_ids, forced) if forced else None
        if canonical is None or len(canonical) <= len(req.output_ids):
            return None
        return canonical

    @staticmethod
    def accept(req: Req, token: int) -> None:
        if req.grammar is None:
            return
        try:
            req.grammar.accept_token(token)
        except ValueError as e:  # cannot happen with the mask applied; never crash the loop
            logger.error("grammar rejected a sampled token for %s: %s", req.rid, e)
            req.to_abort = f"constrained decoding failed: {e}"

    # ---- jump-forward ---------------------------------------------------------------------
    def jump_forward(self, req: Req) -> Optional[List[int]]:
        """New output ids (old output + forced text, re-tokenized) if the state forces text."""
        grammar = req.grammar
        if not self.enable_jump_forward or grammar is None or req.return_logprob or req.finished():
            return None
        helper = grammar.try_jump_forward(self.tokenizer)
        if helper is None:
            return None
        forced, next_state = grammar.jump_forward_str_state(helper)
        if not forced:
            return None
        new_ids = self._retokenize(req.output_ids, forced)
        if new_ids is None or len(new_ids) > len(req.output_ids) + req.remaining_new_tokens() - 1:
            return None
        try:
            grammar.jump_and_retokenize(req.output_ids, new_ids, next_state)
        except ValueError:
            return None  # the grammar keeps its state; decode on normally
        self.num_jumps += 1
        self.num_forced_tokens += len(new_ids) - len(req.output_ids)
        return new_ids

    def _retokenize(self, output_ids: List[int], forced: str) -> Optional[List[int]]:
        keep = max(len(output_ids) - RETOKENIZE_TAIL, 0)
        head, tail = output_ids[:keep], output_ids[keep:]
        tail_text = self.tokenizer.decode(tail)
        if self.tokenizer.decode(head) + tail_text != self.tokenizer.decode(output_ids):
            return None  # the cut splits a character; try again after the next token
        return head + self.tokenizer.encode(tail_text + forced, add_special_tokens=False)


def _allow_only(mask: torch.Tensor, row: int, token: int) -> None:
    """Set row `row` of a packed int32 bitmask to allow exactly `token`."""
    mask[row].zero_()
    bit = 1 << (token % 32)
    mask[row, token // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit  # int32 two's complement
