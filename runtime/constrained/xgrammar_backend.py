"""Optional xgrammar backend (``--grammar-backend xgrammar``): adds EBNF grammars.

xgrammar is imported only when this backend is built; without it a ValueError says how to get it.
JSON schemas go through our own schema walker, emitted as an EBNF grammar with one rule per
``$ref`` target (``json_schema_to_ebnf``), so both backends accept, refuse and enforce exactly the
same keywords; recursive and heavily shared schemas, which the regex path must unroll, compile
here as grammars linear in the schema's size.
"""

from typing import List, Optional, Sequence, Tuple

import torch

from .base import BaseGrammar, BaseGrammarBackend
from .builtin_regex import choices_regex
from .json_schema_ebnf import json_schema_to_ebnf
from .vocab import TokenVocabulary

__all__ = ["XGrammarGrammar", "XGrammarBackend"]


def _import_xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise ValueError("the xgrammar grammar backend needs `pip install xgrammar`") from None
    return xgrammar


class XGrammarGrammar(BaseGrammar):
    """One request's xgrammar ``GrammarMatcher`` plus the tokens it accepted."""

    def __init__(self, compiled, min_jump_chars: int = 2) -> None:
        self._xgr = _import_xgrammar()
        self.compiled = compiled
        self.min_jump_chars = min_jump_chars
        self.matcher = self._xgr.GrammarMatcher(compiled)
        self.tokens: List[int] = []
        self.finished = False

    def accept_token(self, token_id: int) -> None:
        if self.matcher.is_terminated():
            raise ValueError(f"token {token_id} after the grammar already ended")
        if not self.matcher.accept_token(token_id):
            raise ValueError(f"token {token_id} is not allowed by the grammar")
        if self.matcher.is_terminated():
            self.finished = True
        else:
            self.tokens.append(token_id)

    def is_terminated(self) -> bool:
        return self.matcher.is_terminated()

    def fill_vocab_mask(self, vocab_mask: torch.Tensor, idx: int) -> None:
        if self.matcher.is_terminated():  # xgrammar refuses; the request finishes and this row's token is dropped
            vocab_mask[idx].fill_(-1)
            return
        self.matcher.fill_next_token_bitmask(vocab_mask, idx)

    def copy(self) -> "XGrammarGrammar":
        twin = XGrammarGrammar(self.compiled, self.min_jump_chars)
        for tid in self.tokens:
            twin.accept_token(tid)
        return twin

    def try_jump_forward(self, tokenizer=None) -> Optional[Tuple[List[int], str]]:
        if self.matcher.is_terminated():
            return None
        text = self.matcher.find_jump_forward_string()
        return ([], text) if len(text) >= self.min_jump_chars else None

    def jump_forward_str_state(self, helper: Tuple[List[int], str]) -> Tuple[str, None]:
        return helper[1], None  # the matcher's state is implicit; retokenizing re-derives it

    def jump_and_retokenize(self, old_output_ids: Sequence[int], new_output_ids: Sequence[int], next_state=None) -> None:
        """Roll back to the common prefix and accept the new tail; atomic on ValueError."""
        if list(old_output_ids) != self.tokens:
            raise ValueError("old_output_ids are not the tokens this grammar accepted")
        k = 0
        while k < min(len(old_output_ids), len(new_output_ids)) and old_output_ids[k] == new_output_ids[k]:
            k += 1
        self.matcher.rollback(len(self.tokens) - k)
        del self.tokens[k:]
        for i, tid in enumerate(new_output_ids[k:]):
            if not self.matcher.accept_token(tid):
                self.matcher.rollback(i)
                del self.tokens[k:]
                for old in old_output_ids[k:]:
                    self.matcher.accept_token(old)
                self.tokens = list(old_output_ids)
                raise ValueError(f"re-tokenized token {tid} is not allowed by the grammar")
            self.tokens.append(tid)


class XGrammarBackend(BaseGrammarBackend):
    """Grammar backend on xgrammar: kinds "json", "regex", "choices" and "ebnf"."""

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
    ) -> None:
        xgr = _import_xgrammar()
        super().__init__(num_threads, cache_size, compile_timeout_s)
        # Our own token bytes, as the outlines backend gets them: special tokens (None) never
        # match text. (xgrammar's from_huggingface let <|im_start|> and friends match their
        # literal text inside JSON strings, which the detokenizer then drops from the output.)
        vocab = tokenizer if isinstance(tokenizer, TokenVocabulary) else \
            TokenVocabulary.from_tokenizer(tokenizer, vocab_size, eos_token_ids)
        encoded = [b if b is not None else b"" for b in vocab.token_bytes]
        info = xgr.TokenizerInfo(encoded, xgr.VocabType.RAW, vocab_size=vocab.vocab_size,
                                 stop_token_ids=vocab.eos_token_ids)
        self.compiler = xgr.GrammarCompiler(info, max_threads=num_threads)
        self.whitespace_pattern = whitespace_pattern
        self.min_jump_chars = min_jump_chars

    def compile(self, kind: str, text: str):
        try:
            return self._compile(kind, text)
        except ValueError:
            raise
        except Exception as e:  # xgrammar reports bad grammars as RuntimeError and friends
            raise ValueError(f"invalid {kind} grammar: {e}") from None

    def _compile(self, kind: str, text: str):
        if kind == "json":
            # our schema walker (as a grammar), not xgrammar's schema converter: xgrammar 0.2.8
            # ignores type next to enum, allOf, undeclared required names and length limits next
            # to format/pattern (measured), which would let invalid JSON through
            return self.compiler.compile_grammar(json_schema_to_ebnf(text, self.whitespace_pattern))
        if kind == "regex":
            return self.compiler.compile_regex(text)
        if kind == "choices":
            return self.compiler.compile_regex(choices_regex(text))
        return self.compiler.compile_grammar(text)

    def new_grammar(self, compiled) -> XGrammarGrammar:
        return XGrammarGrammar(compiled, self.min_jump_chars)
