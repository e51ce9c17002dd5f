"""Fixtures for constrained decoding: one grammar backend over the real SmolLM2 tokenizer, and a
random walker that plays the model (it samples uniformly among the tokens the mask allows)."""

from __future__ import annotations

import json
import random
from typing import Callable, List, Optional

import pytest
import torch

VOCAB = 49152


@pytest.fixture(scope="session")
def backend(tokenizer):
    from sgl.runtime.constrained import GrammarBackend

    be = GrammarBackend(tokenizer, VOCAB, num_threads=2)
    yield be
    be.shutdown()


@pytest.fixture(scope="session")
def closing_tokens(tokenizer) -> torch.Tensor:
    """Tokens made only of JSON closers/separators: the walker prefers them now and then so
    strings and numbers end in a reasonable number of steps (uniform sampling alone rarely
    picks one of the few hundred tokens holding a quote)."""
    flags = torch.zeros(VOCAB, dtype=torch.bool)
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        if text and set(text) <= set('"]},:@.-/ 0123456789'):
            flags[tid] = True
    return flags


class Walker:
    """Random walk through a grammar: mask -> pick an allowed token -> accept, until EOS."""

    def __init__(self, tokenizer, closing: torch.Tensor):
        self.tokenizer = tokenizer
        self.closing = closing
        self.mask = None

    def allowed(self, grammar) -> torch.Tensor:
        from sgl.runtime.constrained.vocab_mask import unpack_bitmask

        if self.mask is None:
            self.mask = grammar.allocate_vocab_mask(VOCAB, 1)
        self.mask.fill_(-1)
        grammar.fill_vocab_mask(self.mask, 0)
        return unpack_bitmask(self.mask, VOCAB)[0]

    def pick(self, allowed: torch.Tensor, rng: random.Random, bias: float) -> int:
        pool = allowed
        if rng.random() < bias and bool((allowed & self.closing).any()):
            pool = allowed & self.closing
        ids = torch.nonzero(pool).flatten()
        assert ids.numel() > 0, "the grammar allows no token"
        return int(ids[rng.randrange(ids.numel())])

    def walk(self, grammar, rng: random.Random, max_steps: int = 600, bias: float = 0.3,
             eos_prob: float = 0.5, on_step: Optional[Callable] = None) -> List[int]:
        """Token ids of one complete output (EOS excluded); fails if it doesn't finish."""
        eos = self.tokenizer.eos_token_id
        out: List[int] = []
        for _ in range(max_steps):
            allowed = self.allowed(grammar)
            if bool(allowed[eos]) and (rng.random() < eos_prob or int(allowed.sum()) == 1):
                grammar.accept_token(eos)
                assert grammar.is_terminated()
                return out
            tid = self.pick(allowed, rng, bias)
            grammar.accept_token(tid)
            if tid == eos:
                assert grammar.is_terminated()
                return out
            out.append(tid)
            if on_step is not None:
                on_step(grammar, out)
        raise AssertionError(f"walk did not finish in {max_steps} steps: {self.tokenizer.decode(out)!r}")

    def text(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids)


@pytest.fixture(scope="session")
def walker(tokenizer, closing_tokens) -> Walker:
    return Walker(tokenizer, closing_tokens)


@pytest.fixture(scope="session")
def compile_json(backend):
    def compile_(schema, timeout: float = 120.0):
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return backend.get_or_compile("json", text).result(timeout=timeout)

    return compile_


@pytest.fixture(scope="session")
def compile_regex(backend):
    def compile_(regex: str, timeout: float = 120.0):
        return backend.get_or_compile("regex", regex).result(timeout=timeout)

    return compile_


def _regex_sampler(regex: str):
    """Uniform-ish random strings of a regex from interegular's character DFA (a reference
    generator independent of outlines-core). Long strings steer towards the nearest final."""
    import interegular

    fsm = interegular.parse_pattern(regex).to_fsm()
    chars = {sym: [c for c in cs if isinstance(c, str)] for sym, cs in fsm.alphabet.by_transition.items()}
    for c in "aZ7 é中":  # negated classes: the "anything else" symbol gets concrete characters too
        sym = fsm.alphabet[c]
        if sym in chars and c not in chars[sym]:
            chars[sym].append(c)
    dist = {s: 0 for s in fsm.finals}
    changed = True
    while changed:  # distance (in characters) to the nearest accepting state
        changed = False
        for s, edges in fsm.map.items():
            best = min((dist[n] + 1 for sym, n in edges.items() if n in dist and chars.get(sym)), default=None)
            if best is not None and best < dist.get(s, 1 << 30):
                dist[s] = best
                changed = True

    def sample(rng: random.Random, stop_prob: float = 0.2, max_len: int = 300) -> str:
        state, text = fsm.initial, []
        while True:
            if state in fsm.finals and (rng.random() < stop_prob or len(text) >= max_len):
                return "".join(text)
            moves = [(sym, n) for sym, n in fsm.map.get(state, {}).items() if n in dist and chars.get(sym)]
            if len(text) >= max_len:
                moves = [m for m in moves if dist[m[1]] < dist[state]]
            if not moves:
                assert state in fsm.finals
                return "".join(text)
            sym, state = rng.choice(moves)
            text.append(rng.choice(chars[sym]))

    return sample


@pytest.fixture(scope="session")
def regex_sampler():
    return _regex_sampler
