"""The default grammar backend: regex / JSON schema / choices -> outlines-core token index.

``GrammarBackend`` turns each constraint into a regex (``json_schema.py``, ``builtin_regex.py``),
compiles it into a shared ``RegexIndex`` on a pool thread, and gives each request an
``OutlinesGrammar``: an outlines-core ``Guide`` (its state) plus the accepted token ids (for
re-tokenization after a jump-forward and for ``copy``).
"""

from typing import List, Optional, Sequence, Tuple

import torch

from .base import BaseGrammar, BaseGrammarBackend
from .builtin_regex import choices_regex
from .index_worker import IndexBuilder
from .json_schema import json_schema_to_regex
from .jump_forward import utf8_complete_prefix
from .regex_fsm import OutlinesVocabulary, RegexIndex
from .vocab import TokenVocabulary
from .vocab_mask import copy_row_

__all__ = ["OutlinesGrammar", "GrammarBackend"]


class OutlinesGrammar(BaseGrammar):
    """One request's position in a compiled regex automaton."""

    def __init__(self, compiled: RegexIndex, min_jump_chars: int = 2) -> None:
        self.compiled = compiled
        self.min_jump_chars = min_jump_chars
        self.guide = compiled.new_guide()
        self.tokens: List[int] = []  # accepted non-EOS tokens, in order
        self.finished = False
        self._terminated = False
        self._eos = set(compiled.vocab.vocab.eos_token_ids)

    # ------------------------------------------------------------ state

    @property
    def state(self) -> int:
        return self.guide.get_state()

    def is_terminated(self) -> bool:
        return self._terminated

    def is_accepting(self) -> bool:
        """The output so far is a complete match (EOS would be allowed now)."""
        return self.compiled.is_accepting(self.state)

    def accept_token(self, token_id: int) -> None:
        if self._terminated:
            raise ValueError(f"token {token_id} after the grammar already ended")
        if token_id in self._eos:
            if not self.is_accepting():
                raise ValueError(f"EOS token {token_id} before the output matches the grammar")
            self._terminated = self.finished = True
            return
        try:
            self.guide.advance(token_id, False)  # False: don't build the next allowed-token list
        except (ValueError, OverflowError, TypeError):
            raise ValueError(f"token {token_id} is not allowed by the grammar in state {self.state}") from None
        self.tokens.append(token_id)

    def accept_tokens(self, token_ids: Sequence[int]) -> None:
        for tid in token_ids:
            self.accept_token(tid)

    def copy(self) -> "OutlinesGrammar":
        twin = OutlinesGrammar(self.compiled, self.min_jump_chars)
        twin._replay(self.tokens)
        twin._terminated, twin.finished = self._terminated, self.finished
        return twin

    def _replay(self, token_ids: Sequence[int]) -> None:
        """Reset to the initial state and advance through ``token_ids`` (ValueError if refused)."""
        guide = self.compiled.new_guide()
        for i, tid in enumerate(token_ids):
            try:
                guide.advance(tid, False)
            except (ValueError, OverflowError, TypeError):
                raise ValueError(f"token {tid} at output position {i} is not allowed by the grammar") from None
        self.guide = guide
        self.tokens = list(token_ids)

    # ------------------------------------------------------------ masks

    def fill_vocab_mask(self, vocab_mask: torch.Tensor, idx: int) -> None:
        if self._terminated:
            row = self.compiled.vocab.eos_row
        else:
            row = self.compiled.mask_row(self.state, self.guide)
        copy_row_(vocab_mask, idx, row)

    def plain_row(self) -> Optional[torch.Tensor]:
        if self._terminated:
            return None
        compiled = self.compiled
        state = self.guide.get_state()
        row = compiled.plain_rows.get(state)
        if row is None and not compiled.has_row(state):
            compiled.mask_row(state, self.guide)  # first visit of the state (by any request): build it
            row = compiled.plain_rows.get(state)
        return row

    # ------------------------------------------------------------ jump-forward

    def try_jump_forward(self, tokenizer=None) -> Optional[Tuple[List[int], int]]:
        """([], state) when at least ``min_jump_chars`` whole characters are forced.

        ``suffix_ids`` is always empty here: we never jump from inside a UTF-8 character (a
        forced run starting with a continuation byte is skipped), so no byte tokens are needed.
        """
        if self._terminated:
            return None
        state = self.state
        if state in self.compiled.plain_rows:
            return None  # a state known to force nothing (the common case, one dict lookup)
        text, _ = self._forced_text(state)
        if len(text) < self.min_jump_chars:
            return None
        return [], state

    def jump_forward_str_state(self, helper: Tuple[List[int], int]) -> Tuple[str, int]:
        _, state = helper
        return self._forced_text(state)

    def _forced_text(self, state: int) -> Tuple[str, int]:
        data, end = self.compiled.jump_table.forced(state)
        if not data or 0x80 <= data[0] <= 0xBF:
            return "", state
        cut = utf8_complete_prefix(data)
        if cut < len(data):
            end = self.compiled.jump_table.walk(state, cut)
        return data[:cut].decode("utf-8"), end

    def jump_and_retokenize(self, old_output_ids: Sequence[int], new_output_ids: Sequence[int], next_state: int) -> None:
        """Replace the accepted tokens by ``new_output_ids`` (old output + forced text,
        re-tokenized) and check they end in ``next_state``. Atomic: on ValueError the grammar
        keeps its previous state, so the scheduler can abandon the jump."""
        if list(old_output_ids) != self.tokens:
            raise ValueError("old_output_ids are not the tokens this grammar accepted")
        trial = OutlinesGrammar(self.compiled, self.min_jump_chars)
        trial._replay(new_output_ids)
        if trial.state != next_state:
            raise ValueError(
                f"re-tokenized output ends in state {trial.state}, not the jump-forward state {next_state}"
            )
        self.guide, self.tokens = trial.guide, trial.tokens


class GrammarBackend(BaseGrammarBackend):
    """Outlines-core based backend for kinds "regex", "json" and "choices".

    ``tokenizer`` is a HF tokenizer or a ready ``TokenVocabulary``; ``vocab_size`` is the
    model's logits width. ``whitespace_pattern`` is ``--constrained-json-whitespace-pattern``.
    """

    def __init__(
        self,
        tokenizer,
        vocab_size: Optional[int] = None,
        whitespace_pattern: Optional[str] = None,
        num_threads: int = 4,
        cache_size: int = 32,
        compile_timeout_s: Optional[float] = 60.0,
        eos_token_ids: Optional[Sequence[int]] = None,
        min_jump_chars: int = 2,
        isolate: bool = False,
    ) -> None:
        """``isolate``: build token indexes in memory-capped worker processes (index_worker.py),
        so a grammar whose automaton explodes fails its request instead of the process. The
        workers then time each build themselves: ``compile_timeout_s`` counts compile time, not
        the wait for a free worker."""
        super().__init__(num_threads, cache_size, None if isolate else compile_timeout_s)
        if isinstance(tokenizer, TokenVocabulary):
            vocab = tokenizer
        else:
            vocab = TokenVocabulary.from_tokenizer(tokenizer, vocab_size, eos_token_ids)
        self.vocab = OutlinesVocabulary(vocab)
        self.whitespace_pattern = whitespace_pattern
        self.min_jump_chars = min_jump_chars
        self.builder = IndexBuilder(vocab.eos_token_id, self.vocab.mapping, workers=min(num_threads, 2),
                                    timeout=compile_timeout_s) if isolate else None

    def to_regex(self, kind: str, text: str) -> str:
        if kind == "regex":
            return text
        if kind == "json":
            return json_schema_to_regex(text, self.whitespace_pattern)
        if kind == "choices":
            return choices_regex(text)
        raise ValueError("EBNF grammars need the xgrammar backend (--grammar-backend xgrammar)")

    def compile(self, kind: str, text: str) -> RegexIndex:
        return RegexIndex(self.to_regex(kind, text), self.vocab, self.builder)

    def shutdown(self) -> None:
        super().shutdown()
        if self.builder is not None:
            self.builder.shutdown()

    def new_grammar(self, compiled: RegexIndex) -> OutlinesGrammar:
        return OutlinesGrammar(compiled, self.min_jump_chars)
