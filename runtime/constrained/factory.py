"""Pick the grammar backend named by ``--grammar-backend``."""

from typing import Optional, Sequence

from .base import BaseGrammarBackend

__all__ = ["GRAMMAR_BACKENDS", "create_grammar_backend"]

GRAMMAR_BACKENDS = ("outlines", "xgrammar")


def create_grammar_backend(
    name: str,
    tokenizer,
    vocab_size: Optional[int] = None,
    whitespace_pattern: Optional[str] = None,
    num_threads: int = 4,
    eos_token_ids: Optional[Sequence[int]] = None,
    isolate: bool = False,
    **kwargs,
) -> BaseGrammarBackend:
    """``name`` is "outlines" (default, outlines-core) or "xgrammar" (needs the package; adds EBNF).
    ``isolate``: outlines builds its token indexes in memory-capped worker processes (the server
    does; xgrammar's compiler bounds its own work)."""
    if name == "outlines":
        from .outlines_backend import GrammarBackend

        cls = GrammarBackend
        kwargs["isolate"] = isolate
    elif name == "xgrammar":
        from .xgrammar_backend import XGrammarBackend

        cls = XGrammarBackend
    else:
        raise ValueError(f"unknown grammar backend {name!r}; expected one of {GRAMMAR_BACKENDS}")
    return cls(tokenizer, vocab_size, whitespace_pattern=whitespace_pattern, num_threads=num_threads,
               eos_token_ids=eos_token_ids, **kwargs)
