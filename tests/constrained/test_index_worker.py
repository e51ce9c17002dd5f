"""Token indexes built in memory-capped worker processes: an automaton too large for its worker
fails that grammar alone (a ValueError naming the limit), the next build gets a fresh worker, and
the index that comes back is the one outlines-core builds in process."""

from __future__ import annotations

import pytest

from sgl.runtime.constrained.index_worker import IndexBuilder, IndexBuildLimit
from sgl.runtime.constrained.regex_fsm import RegexIndex


@pytest.fixture(scope="module")
def builder(backend):
    b = IndexBuilder(backend.vocab.vocab.eos_token_id, backend.vocab.mapping, workers=1,
                     memory_limit=400 << 20, timeout=60)
    yield b
    b.shutdown()


def _walk(index: RegexIndex, ids):
    state = index.initial_state
    for tid in ids:
        state = index.next_state(state, tid)
        assert state is not None
    return state


def test_same_index_as_in_process(backend, builder, tokenizer):
    regex = r'\{"a": (?:[0-9]{1,3}|true)\}'
    inside, outside = RegexIndex(regex, backend.vocab), RegexIndex(regex, backend.vocab, builder)
    ids = tokenizer.encode('{"a": 12', add_special_tokens=False)
    s_in, s_out = _walk(inside, ids), _walk(outside, ids)
    assert sorted(inside.index.get_allowed_tokens(s_in)) == sorted(outside.index.get_allowed_tokens(s_out))
    done = tokenizer.encode('{"a": true}', add_special_tokens=False)
    assert inside.is_accepting(_walk(inside, done)) and outside.is_accepting(_walk(outside, done))


def test_memory_bomb_fails_alone(backend, builder, tokenizer):
    # ~2000 free-text states: well over a gigabyte of index at vocab 49K, above the 400 MB cap
    with pytest.raises(IndexBuildLimit, match="GiB of memory"):
        RegexIndex('"[^"]{0,2000}"', backend.vocab, builder)
    small = RegexIndex("(yes|no)", backend.vocab, builder)  # a fresh worker takes over
    assert small.is_accepting(_walk(small, tokenizer.encode("yes", add_special_tokens=False)))


def test_invalid_regex_keeps_outlines_message(backend, builder):
    with pytest.raises(ValueError, match="invalid regex|unsupported regex"):
        RegexIndex("(a|", backend.vocab, builder)
