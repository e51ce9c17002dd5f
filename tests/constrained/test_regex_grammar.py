"""Regex grammars over the real SmolLM2 vocabulary: random walks through the token automaton
fullmatch the regex; masks agree with outlines-core; EOS only in accepting states."""

import random
import re

import pytest
import regex as uregex  # Unicode \w like outlines-core's Rust engine (Python's re omits marks)
import torch

from sgl.runtime.constrained import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, choices_regex, dtype_regex
from sgl.runtime.constrained.vocab_mask import unpack_bitmask

VOCAB = 49152

REGEXES = {
    "ipv4": r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    "email": r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,15}\.(com|org|net|io)",
    "iso_date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "phone": r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
    "hex_colour": r"#[0-9a-fA-F]{6}",
    "log_line": r"\[(INFO|WARN|ERROR)\] [0-9]{2}:[0-9]{2}:[0-9]{2} [a-z_]{3,12}: [A-Za-z ]{1,30}",
    "unicode": r"(café|日本語|😀){1,3}",
}


@pytest.mark.parametrize("name", sorted(REGEXES))
def test_random_walks_fullmatch(name, compile_regex, walker):
    regex = REGEXES[name]
    base = compile_regex(regex)
    rng = random.Random(name)
    for _ in range(12):
        grammar = base.copy()
        ids = walker.walk(grammar, rng, eos_prob=0.3)
        text = walker.text(ids)
        assert re.fullmatch(regex, text), (name, text)


@pytest.mark.parametrize("dtype, regex", [(int, REGEX_INT), (float, REGEX_FLOAT), (bool, REGEX_BOOL), (str, REGEX_STR)])
def test_dtype_regexes(dtype, regex, compile_regex, walker):
    assert dtype_regex(dtype) == regex == dtype_regex(dtype.__name__)
    base = compile_regex(regex)
    rng = random.Random(str(dtype))
    for _ in range(6):
        text = walker.text(walker.walk(base.copy(), rng, eos_prob=0.6))
        assert uregex.fullmatch(regex, text), text


def test_dtype_unknown():
    with pytest.raises(ValueError, match="unsupported dtype"):
        dtype_regex(list)


def test_choices(backend, walker):
    choices = ["red", "green", "blue sky", 'say "hi"']
    import json

    base = backend.get_or_compile("choices", json.dumps(choices)).result(timeout=60)
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        seen.add(walker.text(walker.walk(base.copy(), rng)))
    assert seen <= set(choices) and len(seen) >= 3
    assert re.fullmatch(choices_regex(choices), "blue sky")
    with pytest.raises(ValueError, match="non-empty list"):
        choices_regex([])


def _reference_allowed(grammar, regex: str, text: str, eos: int) -> torch.Tensor:
    """Allowed tokens straight from outlines-core's index (no caching, no bitmask); EOS exactly
    when Python's regex engine says the text so far is a full match."""
    flags = torch.zeros(VOCAB, dtype=torch.bool)
    ids = [t for t in grammar.compiled.index.get_allowed_tokens(grammar.state) if t < VOCAB]
    flags[torch.tensor(ids, dtype=torch.long)] = True
    flags[eos] = uregex.fullmatch(regex, text) is not None
    return flags


@pytest.mark.parametrize("name", ["log_line", "accepting_inside"])
def test_mask_matches_outlines_index(name, compile_regex, walker, tokenizer):
    regex = REGEXES.get(name, r"[0-9]{1,4}(\.[0-9]{1,2})?(e[0-9])?")
    base = compile_regex(regex)
    rng = random.Random(1)
    checked = 0

    def check(grammar, ids):
        nonlocal checked
        if grammar.is_terminated():
            return
        ref = _reference_allowed(grammar, regex, tokenizer.decode(ids), tokenizer.eos_token_id)
        assert torch.equal(walker.allowed(grammar), ref)
        checked += 1

    for _ in range(4):
        g = base.copy()
        check(g, [])
        walker.walk(g, rng, on_step=check, eos_prob=0.2)
    assert checked > 15


def test_single_byte_tokens_after_a_full_match(compile_regex, walker, tokenizer):
    """outlines-core 0.2.14 alone drops "." after "12" and "c" after "ab" (accepting states);
    the end-of-match sentinel keeps them."""
    g = compile_regex(r"[0-9]+(\.[0-9]+)?").copy()
    g.accept_token(tokenizer.convert_tokens_to_ids("1"))
    assert walker.allowed(g)[tokenizer.convert_tokens_to_ids(".")]
    g2 = compile_regex(r"ab|abcd").copy()
    g2.accept_token(tokenizer.convert_tokens_to_ids("ab"))
    allowed = walker.allowed(g2)
    assert allowed[tokenizer.convert_tokens_to_ids("c")] and allowed[tokenizer.eos_token_id]


def test_eos_only_in_accepting_states(compile_regex, tokenizer):
    g = compile_regex(r"ab(cd)?").copy()
    eos = tokenizer.eos_token_id
    a, b, cd = (tokenizer.convert_tokens_to_ids(t) for t in ("a", "b", "cd"))
    with pytest.raises(ValueError, match="EOS"):
        g.accept_token(eos)
    g.accept_token(a)
    g.accept_token(b)
    assert g.is_accepting()
    twin = g.copy()
    g.accept_token(cd)
    assert g.is_accepting() and not twin.is_terminated()
    g.accept_token(eos)
    assert g.is_terminated() and g.finished
    mask = g.allocate_vocab_mask(VOCAB, 2)
    g.fill_vocab_mask(mask, 1)
    allowed = unpack_bitmask(mask, VOCAB)
    assert allowed[0].all()  # untouched row: unconstrained request
    assert torch.nonzero(allowed[1]).flatten().tolist() == [eos]
    with pytest.raises(ValueError, match="already ended"):
        g.accept_token(a)
    twin.accept_token(cd)  # the copy moved independently
    assert twin.tokens == [a, b, cd]


def test_disallowed_token_is_rejected_without_moving(compile_regex, tokenizer):
    g = compile_regex(r"[0-9]+").copy()
    before = g.state
    with pytest.raises(ValueError, match="not allowed"):
        g.accept_token(tokenizer.convert_tokens_to_ids("a"))
    assert g.state == before and g.tokens == []
    with pytest.raises(ValueError, match="not allowed"):
        g.accept_token(10**9)


def test_special_tokens_never_allowed(compile_regex, walker, tokenizer):
    g = compile_regex(r"(.|\n){0,20}").copy()
    allowed = walker.allowed(g)
    specials = [t for t in tokenizer.all_special_ids if t != tokenizer.eos_token_id]
    assert not allowed[specials].any()
    assert allowed[tokenizer.eos_token_id]  # the empty output already matches


@pytest.mark.parametrize("regex, reason", [
    ("(ab", "missing \\)"),
    ("a{2,1}", "invalid regex"),
    ("(?=a)b", "look-around"),
    ("a\\Zb", "unsupported regex"),
])
def test_invalid_regex_fails_the_future(backend, regex, reason):
    fut = backend.get_or_compile("regex", regex)
    with pytest.raises(ValueError, match=reason):
        fut.result(timeout=60)


def test_anchors_at_the_ends_are_accepted(compile_regex, walker):
    g = compile_regex(r"^[xy]{3}$").copy()
    text = walker.text(walker.walk(g, random.Random(2)))
    assert re.fullmatch(r"[xy]{3}", text)


def test_plain_row_is_the_filled_row_of_states_that_force_nothing(compile_json, walker, tokenizer):
    """The scheduler's fast path (``plain_row``: one memmove, no jump-forward check) gives the
    row ``fill_vocab_mask`` writes, and only in states where jump-forward has nothing to jump."""
    from sgl.runtime.constrained.base import BaseGrammar

    schema = {"type": "object", "properties": {"a_rather_long_key_name": {"type": "string", "maxLength": 30},
                                               "n": {"type": "integer"}},
              "required": ["a_rather_long_key_name", "n"]}
    base = compile_json(schema)
    seen = {"plain": 0, "forced": 0}

    def check(grammar, ids):
        if grammar.is_terminated():
            assert grammar.plain_row() is None
            return
        mask = BaseGrammar.allocate_vocab_mask(VOCAB, 1)
        grammar.fill_vocab_mask(mask, 0)  # builds and caches the state's row
        row = grammar.plain_row()
        if row is None:
            assert grammar.try_jump_forward(tokenizer) is not None or grammar.compiled.jump_table.forced(grammar.state)[0]
            seen["forced"] += 1
        else:
            assert torch.equal(row, mask[0]) and grammar.try_jump_forward(tokenizer) is None
            seen["plain"] += 1

    rng = random.Random(3)
    for _ in range(3):
        g = base.copy()
        check(g, [])
        walker.walk(g, rng, on_step=check, eos_prob=0.5)
    assert seen["plain"] > 5 and seen["forced"] > 0, seen


def test_manager_masks_equal_with_and_without_the_fast_path(compile_json, tokenizer, monkeypatch):
    """GrammarManager.apply_masks over a batch mixing free rows, plain states, forced states (the
    canonical next token) and a finished grammar: the same logits with ``plain_row`` turned off."""
    from sgl.runtime.constrained.outlines_backend import OutlinesGrammar
    from sgl.runtime.sampling.params import SamplingParams
    from sgl.runtime.scheduler.grammar import GrammarManager
    from sgl.runtime.scheduler.req import Req

    base = compile_json({"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]})
    gm = GrammarManager(tokenizer, VOCAB, None, enable_jump_forward=True, eos_token_ids=[tokenizer.eos_token_id])
    reqs = []
    for i, text in enumerate(["", '{"st', '{"story": "Once upon', '{"story": "x"}', None]):
        req = Req(str(i), [1, 2], SamplingParams(max_new_tokens=64))
        if text is not None:
            req.grammar = base.copy()
            for tid in tokenizer.encode(text, add_special_tokens=False):
                req.output_ids.append(tid)
                req.grammar.accept_token(tid)
        reqs.append(req)
    reqs[3].grammar.accept_token(tokenizer.eos_token_id)  # terminated: EOS-only row
    for r in reqs:  # build every state's row once, so the fast path has them
        if r.grammar is not None:
            r.grammar.fill_vocab_mask(BaseGrammarMask(VOCAB), 0)
    assert reqs[2].grammar.plain_row() is not None and reqs[1].grammar.plain_row() is None
    logits = torch.randn(len(reqs), VOCAB, generator=torch.Generator().manual_seed(0))
    fast = logits.clone()
    gm.apply_masks(reqs, fast)
    monkeypatch.setattr(OutlinesGrammar, "plain_row", lambda self: None)
    slow = logits.clone()
    gm.apply_masks(reqs, slow)
    assert torch.equal(fast, slow)
    monkeypatch.undo()
    cached = logits.clone()  # the CUDA path (device row cache, gathered by slot), run here on CPU
    rest = gm._apply_cached_rows(reqs, [0, 1, 2, 3], cached)
    assert 2 in rest or gm._device_rows.uploads >= 1
    assert 1 in rest and 3 in rest  # forced text and a finished grammar take the host path
    gm._apply_host_rows(reqs, rest, cached)
    assert torch.equal(cached, slow)
    uploads = gm._device_rows.uploads
    again = logits.clone()
    gm._apply_host_rows(reqs, gm._apply_cached_rows(reqs, [0, 1, 2, 3], again), again)
    assert torch.equal(again, slow) and gm._device_rows.uploads == uploads  # rows are uploaded once
    assert torch.equal(fast[4], logits[4])  # the free row is untouched
    assert 1 <= torch.isfinite(fast[1]).sum() <= 5  # 'ory"' is forced
    assert 100 < torch.isfinite(fast[2]).sum() < VOCAB and torch.isfinite(fast[3]).sum() == 1


def BaseGrammarMask(vocab: int) -> torch.Tensor:
    from sgl.runtime.constrained.base import BaseGrammar

    return BaseGrammar.allocate_vocab_mask(vocab, 1)


def test_states_with_equal_rows_share_one_row(compile_json, tokenizer):
    """The counted characters of a bounded string are a state each, with the same allowed tokens:
    their cached rows are one tensor (one device slot in the scheduler's row cache)."""
    # far from the bound (the longest token is much shorter than 300 characters) every count's row is the same
    base = compile_json({"type": "object", "properties": {"s": {"type": "string", "maxLength": 300}},
                         "required": ["s"]})
    g = base.copy()
    for tid in tokenizer.encode('{"s": "', add_special_tokens=False):
        g.accept_token(tid)
    rows = []
    for tid in tokenizer.encode("abcdefgh", add_special_tokens=False):
        g.fill_vocab_mask(BaseGrammarMask(VOCAB), 0)
        rows.append(g.plain_row())
        g.accept_token(tid)
    assert all(r is not None for r in rows) and len(rows) >= 3
    assert len({id(r) for r in rows}) == 1, "equal rows of different states should be one tensor"
