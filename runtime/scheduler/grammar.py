"""Constrained decoding in the scheduler: the grammar queue, batched masks, jump-forward.

A request with `regex` / `json_schema` / `ebnf` waits in the grammar queue while its grammar
compiles on the backend's thread pool; a compile error fails that request alone (an abort with
status 400). Each forward fills one packed bitmask for the whole batch. After a token is accepted,
a state that forces text (the compressed FSM) is jumped over: the forced text is appended, the
last few output tokens are re-tokenized together with it so the ids are the tokenizer's own, and
the request goes back to the queue to prefill the new tokens in one extend.

A request with a `structural_tag` decodes freely until one of its triggers appears in the output;
from the trigger's first character the trigger's grammar applies, and once that span has ended the
output is free again (`StructuralState`, `constrained/structural_tag.py`).
"""

from __future__ import annotations

import logging
import functools
from typing import Dict, List, Optional, Sequence, Tuple

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
    if getattr(params, "structural_tag", None) is not None:
        return "structural_tag", params.structural_tag
    return None


class StructuralState:
    """A request under a structural tag: a fresh grammar per trigger (copied when a span opens),
    where the open span began in the output (None: the output is free), and a rewrite of the
    output waiting to be applied (a trigger that began inside a token)."""

    def __init__(self, grammars: Dict[str, object]):
        self.grammars = grammars
        # output tokens decoded to look for a trigger: each token is at least one character
        self.window = max(len(t) for t in grammars) + 1
        self.start: Optional[int] = None
        self.pending: Optional[List[int]] = None


@functools.lru_cache(maxsize=64)
def _trigger_regexes(text: str, whitespace_pattern: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    from sgl.runtime.constrained.json_schema import json_schema_to_regex
    from sgl.runtime.constrained.structural_tag import parse_structural_tag

    tag = parse_structural_tag(text)
    return tuple(tag.trigger_regexes(lambda schema: json_schema_to_regex(schema, whitespace_pattern)).items())


class _StructuralFuture:
    """Future-like over a structural tag: its trigger regexes are built on a pool thread, then each
    is compiled by the backend (cached like any regex); the result is a StructuralState."""

    def __init__(self, backend, text: str, whitespace_pattern: Optional[str]):
        self.backend = backend
        self.regexes = backend.run_async(_trigger_regexes, text, whitespace_pattern)
        self.compiles: Optional[Dict[str, object]] = None

    def done(self) -> bool:
        if self.compiles is None:
            if not self.regexes.done():
                return False
            if self.regexes.exception() is not None:
                return True
            self.compiles = {t: self.backend.get_or_compile("regex", r) for t, r in self.regexes.result()}
        return all(f.done() for f in self.compiles.values())

    def exception(self) -> Optional[BaseException]:
        if self.regexes.exception() is not None:
            return self.regexes.exception()
        errors = [f.exception() for f in (self.compiles or {}).values() if f.exception() is not None]
        return errors[0] if errors else None

    def result(self) -> StructuralState:
        return StructuralState({t: f.result() for t, f in self.compiles.items()})


class GrammarManager:
    def __init__(self, tokenizer, vocab_size: int, whitespace_pattern: Optional[str], enable_jump_forward: bool,
                 backend: str = "outlines", eos_token_ids: Sequence[int] = ()):
        """`backend` is --grammar-backend: "outlines" (built in) or "xgrammar" (optional package)."""
        from sgl.runtime.constrained import create_grammar_backend

        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        # isolate: a grammar whose automaton needs too much memory fails its request, not the scheduler
        self.backend = create_grammar_backend(backend, tokenizer, vocab_size, whitespace_pattern=whitespace_pattern,
                                              isolate=True, eos_token_ids=tuple(eos_token_ids) or None)
        self.whitespace_pattern = whitespace_pattern
        self.eos_token_ids = tuple(eos_token_ids)
        self.enable_jump_forward = enable_jump_forward and tokenizer is not None
        self.queue: List[Tuple[Req, object]] = []
        self.num_jumps = 0
        self.num_forced_tokens = 0
        self._device_rows = None  # DeviceRowCache, made on the first CUDA step

    # ---- compilation queue ----------------------------------------------------------------
    def submit(self, req: Req) -> bool:
        """Start compiling req's grammar; False when the request has no constraint."""
        key = grammar_key(req.sampling_params)
        if key is None:
            return False
        if key[0] == "structural_tag":
            self.queue.append((req, _StructuralFuture(self.backend, key[1], self.whitespace_pattern)))
        else:
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
                result = fut.result()
                if isinstance(result, StructuralState):
                    req.structural = result
                else:
                    req.grammar = result
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
        if logits.is_cuda:
            rows = self._apply_cached_rows(reqs, rows, logits)
            if not rows:
                return
        self._apply_host_rows(reqs, rows, logits)

    def _apply_cached_rows(self, reqs: Sequence[Req], rows: List[int], logits: torch.Tensor) -> List[int]:
        """Mask the rows whose state has a cached row from the device row cache (one index copy
        and one kernel); returns the rows left for the host path (forced text, uncached states)."""
        from sgl.runtime.constrained.vocab_mask import DeviceRowCache, apply_token_bitmask_rows_, bitmask_words

        cache = self._device_rows
        if cache is None or cache.device != logits.device:
            cache = self._device_rows = DeviceRowCache(bitmask_words(self.vocab_size), logits.device)
        cache.reserve(len(rows))
        at, slots, rest = [], [], []
        for i in rows:
            row = reqs[i].grammar.plain_row()
            if row is None or row.numel() > cache.words:
                rest.append(i)
            else:
                at.append(i)
                slots.append(cache.slot(row))
        if at:
            index = torch.tensor([at, slots], dtype=torch.int32, pin_memory=logits.is_cuda)
            index = index.to(logits.device, non_blocking=True)
            with torch.inference_mode():  # the forward's logits are inference tensors
                apply_token_bitmask_rows_(logits, cache.table, index[0], index[1])
        return rest

    def _apply_host_rows(self, reqs: Sequence[Req], rows: List[int], logits: torch.Tensor) -> None:
        """Fill the given rows into a host mask, copy it over, mask (the CPU path, and on CUDA the
        rows that force text or whose state has no cached row yet)."""
        from sgl.runtime.constrained import BaseGrammar
        from sgl.runtime.constrained.vocab_mask import RowWriter, apply_token_bitmask_rows_

        mask = BaseGrammar.allocate_vocab_mask(self.vocab_size, len(rows))
        writer = RowWriter(mask)
        for j, i in enumerate(rows):
            req = reqs[i]
            row = req.grammar.plain_row()  # a state that forces no text, row cached: one memmove
            if row is not None and writer.put(j, row):
                continue
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
        canonical = self._retokenize(req.output_ids, forced, self._floor(req)) if forced else None
        if canonical is None or len(canonical) <= len(req.output_ids):
            return None
        return canonical

    def accept(self, req: Req, token: int) -> None:
        if req.grammar is None:
            if req.structural is not None:
                self._open_span(req)
            return
        try:
            req.grammar.accept_token(token)
        except ValueError as e:  # cannot happen with the mask applied; never crash the loop
            logger.error("grammar rejected a sampled token for %s: %s", req.rid, e)
            req.to_abort = f"constrained decoding failed: {e}"
            return
        self._close_span(req)

    # ---- structural tags --------------------------------------------------------------------
    def _close_span(self, req: Req) -> None:
        """Back to free text once the open span's grammar allows nothing but its end."""
        st = req.structural
        if st is None or st.start is None or req.grammar.is_terminated() or not self._only_end(req.grammar):
            return
        req.grammar, st.start = None, None

    def _only_end(self, grammar) -> bool:
        from sgl.runtime.constrained import BaseGrammar

        mask = BaseGrammar.allocate_vocab_mask(self.vocab_size, 1)
        grammar.fill_vocab_mask(mask, 0)
        row = mask[0]
        for eos in set(self.eos_token_ids) | set(getattr(grammar, "_eos", ())):
            if 0 <= eos < self.vocab_size:
                word = (int(row[eos // 32]) & 0xFFFFFFFF) & ~(1 << (eos % 32))
                row[eos // 32] = word - (1 << 32) if word >= 1 << 31 else word
        return not bool(row.any())

    def _open_span(self, req: Req) -> None:
        """Open a span when the newest token completed a trigger. The span starts at the trigger's
        first character: when that is a token boundary and the grammar takes the tokens since, the
        output stands; otherwise it is rewritten to end just before the trigger, followed by the
        text the span's grammar forces (the trigger and more). Either way the request goes back
        for a short extend (`StructuralState.pending`, applied by the scheduler)."""
        st = req.structural
        if self.tokenizer is None or st.pending is not None or not req.output_ids:
            return
        window = req.output_ids[-st.window:]
        text = self.tokenizer.decode(window)
        before = self.tokenizer.decode(window[:-1])
        hits = [(text.find(t), t) for t in st.grammars if t in text and t not in before]
        if not hits:
            return
        pos, trigger = min(hits)
        base = len(req.output_ids) - len(window)
        for j in range(len(window)):
            grammar = st.grammars[trigger].copy()
            if len(self.tokenizer.decode(window[:j])) == pos and self._takes(grammar, window[j:]):
                # the output stands; it is still re-prefilled, because a decode step launched
                # before the span opened (overlap scheduling) sampled without its mask
                req.grammar, st.start, st.pending = grammar, base + j, list(req.output_ids)
                return
        if req.return_logprob:
            return  # a rewrite would leave tokens without logprobs: the span stays free
        head = req.output_ids[:base]
        if self.tokenizer.decode(head) + text != self.tokenizer.decode(req.output_ids):
            return  # the window cuts a character in two; the span stays free
        grammar = st.grammars[trigger].copy()
        helper = grammar.try_jump_forward(self.tokenizer)
        forced = grammar.jump_forward_str_state(helper)[0] if helper is not None else ""
        head = head + self.tokenizer.encode(text[:pos], add_special_tokens=False)
        span = self.tokenizer.encode(forced if forced.startswith(trigger) else trigger, add_special_tokens=False)
        if not self._takes(grammar, span):
            logger.warning("structural tag of %s: the grammar refused the span's opening text", req.rid)
            return
        req.grammar, st.start, st.pending = grammar, len(head), head + span

    @staticmethod
    def _takes(grammar, tokens: Sequence[int]) -> bool:
        """Advance ``grammar`` through ``tokens`` (False, with ``grammar`` unusable, if it refuses one)."""
        try:
            for token in tokens:
                grammar.accept_token(token)
        except ValueError:
            return False
        return True

    @staticmethod
    def take_rewrite(req: Req) -> Optional[List[int]]:
        """The rewritten output of a request whose span opened inside a token (once)."""
        st = req.structural
        if st is None or st.pending is None:
            return None
        new_ids, st.pending = st.pending, None
        return new_ids

    @staticmethod
    def _floor(req: Req) -> int:
        """Output tokens before the grammar's first one (a structural span starts later)."""
        st = req.structural
        return st.start if st is not None and st.start is not None else 0

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
        floor = self._floor(req)
        new_ids = self._retokenize(req.output_ids, forced, floor)
        if new_ids is None or len(new_ids) > len(req.output_ids) + req.remaining_new_tokens() - 1:
            return None
        try:
            grammar.jump_and_retokenize(req.output_ids[floor:], new_ids[floor:], next_state)
        except ValueError:
            return None  # the grammar keeps its state; decode on normally
        self.num_jumps += 1
        self.num_forced_tokens += len(new_ids) - len(req.output_ids)
        self._close_span(req)
        return new_ids

    def _retokenize(self, output_ids: List[int], forced: str, floor: int = 0) -> Optional[List[int]]:
        """``output_ids`` + ``forced`` with the last few tokens (none before ``floor``) re-tokenized."""
        keep = max(len(output_ids) - RETOKENIZE_TAIL, floor)
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
