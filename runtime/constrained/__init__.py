"""Constrained decoding: regex / JSON schema / choices grammars, batched vocab masks, jump-forward.

Public API (what the scheduler, server and language call):

* ``create_grammar_backend(name, tokenizer, vocab_size, whitespace_pattern, num_threads)`` for
  ``--grammar-backend outlines|xgrammar`` (xgrammar optional; it adds ``"ebnf"``).
* ``GrammarBackend(tokenizer, vocab_size, whitespace_pattern=None, num_threads=4, ...)``:
  ``get_or_compile(kind, text) -> Future[OutlinesGrammar]`` for kind in
  ``"json" | "regex" | "choices"`` (``"ebnf"`` fails: it needs xgrammar), ``reset()``,
  ``shutdown()``.
* ``BaseGrammar`` (per-request matcher): ``accept_token``, ``is_terminated``, ``finished``,
  ``fill_vocab_mask``, ``copy``, ``try_jump_forward``, ``jump_forward_str_state``,
  ``jump_and_retokenize``, and the static ``allocate_vocab_mask`` / ``move_vocab_mask`` /
  ``apply_vocab_mask`` (packed int32 bitmask, bit set = allowed).
* ``json_schema_to_regex`` / ``build_regex_from_object``, ``dtype_regex``, ``choices_regex``.
"""

from .base import GRAMMAR_KINDS, BaseGrammar, BaseGrammarBackend
from .factory import GRAMMAR_BACKENDS, create_grammar_backend
from .builtin_regex import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, choices_regex, dtype_regex
from .json_schema import ANY_JSON, DEFAULT_WHITESPACE_PATTERN, build_regex_from_object, json_schema_to_regex
from .outlines_backend import GrammarBackend, OutlinesGrammar
from .vocab import TokenVocabulary

__all__ = [
    "GRAMMAR_KINDS",
    "BaseGrammar",
    "BaseGrammarBackend",
    "GrammarBackend",
    "GRAMMAR_BACKENDS",
    "create_grammar_backend",
    "OutlinesGrammar",
    "TokenVocabulary",
    "json_schema_to_regex",
    "build_regex_from_object",
    "ANY_JSON",
    "DEFAULT_WHITESPACE_PATTERN",
    "dtype_regex",
    "choices_regex",
    "REGEX_INT",
    "REGEX_FLOAT",
    "REGEX_BOOL",
    "REGEX_STR",
]
