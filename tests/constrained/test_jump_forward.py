"""Jump-forward: the compressed FSM's forced text, checked against interegular's character DFA,
and re-tokenization after a jump keeping the grammar consistent."""

import json
import random
import re

import jsonschema
import pytest

from sgl.runtime.constrained.jump_forward import CharDfaJumpTable

LONG_KEYS = {
    "type": "object",
    "properties": {
        "customer_full_legal_name": {"type": "string", "maxLength": 10},
        "customer_primary_email_address": {"type": "string", "format": "email"},
        "account_is_currently_active": {"type": "boolean"},
        "number_of_previous_orders_placed": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["customer_full_legal_name", "customer_primary_email_address",
                 "account_is_currently_active", "number_of_previous_orders_placed"],
}

# regexes both interegular and outlines-core read the same way
REFERENCE_REGEXES = [
    r"\{\"name\": \"[a-z]{1,8}\", \"status\": \"(active|inactive|banned)\"\}",
    r"(hello world|help me)[0-9]{2}",
    r"café au lait|crème brûlée",
    r"<(b|i)>[a-z ]{1,10}</(b|i)>",
    r"(abc)+xyz",
]


def _retokenize(tokenizer, ids, jump_str):
    return tokenizer.encode(tokenizer.decode(ids) + jump_str)


def test_long_fixed_key_is_forced(compile_json, tokenizer):
    g = compile_json(LONG_KEYS).copy()
    assert g.try_jump_forward(tokenizer) is None  # "{" then optional space: one char only
    g.accept_token(tokenizer.convert_tokens_to_ids("{"))
    g.accept_token(tokenizer.convert_tokens_to_ids('"'))
    helper = g.try_jump_forward(tokenizer)
    assert helper is not None and helper[0] == []
    text, state = g.jump_forward_str_state(helper)
    assert text == 'customer_full_legal_name"'
    new_ids = _retokenize(tokenizer, g.tokens, text)
    g.jump_and_retokenize(list(g.tokens), new_ids, state)
    assert g.tokens == new_ids and g.state == state
    assert tokenizer.decode(g.tokens) == '{"customer_full_legal_name"'


@pytest.mark.parametrize("regex", REFERENCE_REGEXES)
def test_forced_text_matches_char_dfa_reference(regex, compile_regex, walker, tokenizer):
    base = compile_regex(regex)
    ref = CharDfaJumpTable(regex)
    rng = random.Random(regex)
    compared = 0
    for _ in range(8):
        g = base.copy()

        def check(grammar, ids):
            nonlocal compared
            if grammar.is_terminated():
                return
            data = b"".join(walker_bytes[i] for i in ids)
            try:
                prefix = data.decode("utf-8")
            except UnicodeDecodeError:
                return  # mid-character: the reference works on whole characters
            ref_state = ref.advance(ref.initial, prefix)
            assert ref_state is not None, prefix
            fast, _ = grammar._forced_text(grammar.state)
            assert fast == ref.forced(ref_state), (prefix, fast)
            compared += 1

        walker_bytes = base.compiled.vocab.vocab.token_bytes
        check(g, [])
        text = walker.text(walker.walk(g, rng, on_step=check))
        assert re.fullmatch(regex, text)
    assert compared >= 20


def _walk_with_jumps(grammar, walker, tokenizer, rng, max_steps=800):
    """Random walk that jumps forward whenever text is forced; returns (text, sampled, jumps)."""
    eos = tokenizer.eos_token_id
    sampled = jumps = 0
    for _ in range(max_steps):
        helper = grammar.try_jump_forward(tokenizer)
        if helper is not None:
            jump_str, state = grammar.jump_forward_str_state(helper)
            old = list(grammar.tokens)
            grammar.jump_and_retokenize(old, _retokenize(tokenizer, old, jump_str), state)
            jumps += 1
        allowed = walker.allowed(grammar)
        sampled += 1
        if bool(allowed[eos]) and rng.random() < 0.5:
            grammar.accept_token(eos)
            return tokenizer.decode(grammar.tokens), sampled, jumps
        tid = walker.pick(allowed, rng, 0.3)
        grammar.accept_token(tid)
        if tid == eos:
            return tokenizer.decode(grammar.tokens), sampled, jumps
    raise AssertionError("walk did not finish")


def test_walks_with_jumps_still_validate(compile_json, walker, tokenizer):
    base = compile_json(LONG_KEYS)
    validator = jsonschema.Draft202012Validator(LONG_KEYS, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    rng = random.Random(5)
    total_jumped = total_sampled_plain = total_sampled_jump = 0
    for _ in range(6):
        text, sampled, jumps = _walk_with_jumps(base.copy(), walker, tokenizer, rng)
        validator.validate(json.loads(text))
        total_jumped += jumps
        total_sampled_jump += sampled
        total_sampled_plain += len(walker.walk(base.copy(), rng, max_steps=1500)) + 1
    assert total_jumped >= 6 * 4  # every key (and its quote/colon) was jumped over
    assert total_sampled_jump < total_sampled_plain  # jumping skipped decoding steps


def test_failed_retokenize_keeps_state(compile_json, tokenizer):
    g = compile_json(LONG_KEYS).copy()
    for tok in ("{", '"'):
        g.accept_token(tokenizer.convert_tokens_to_ids(tok))
    before_tokens, before_state = list(g.tokens), g.state
    text, state = g.jump_forward_str_state(g.try_jump_forward(tokenizer))
    wrong = tokenizer.encode('{"customer_full_legal_nam"')  # not the forced text
    with pytest.raises(ValueError):
        g.jump_and_retokenize(before_tokens, wrong, state)
    assert g.tokens == before_tokens and g.state == before_state
    with pytest.raises(ValueError, match="old_output_ids"):
        g.jump_and_retokenize([1, 2, 3], _retokenize(tokenizer, before_tokens, text), state)
    truncated = _retokenize(tokenizer, before_tokens, text)[:-1]
    with pytest.raises(ValueError, match="jump-forward state"):
        g.jump_and_retokenize(before_tokens, truncated, state)
    assert g.tokens == before_tokens


def test_no_jump_in_accepting_or_branching_states(compile_regex, tokenizer):
    g = compile_regex(r"ab(cdef)?").copy()
    g.accept_token(tokenizer.convert_tokens_to_ids("ab"))
    assert g.is_accepting() and g.try_jump_forward(tokenizer) is None
    g2 = compile_regex(r"x(yes|no)").copy()
    g2.accept_token(tokenizer.convert_tokens_to_ids("x"))
    assert g2.try_jump_forward(tokenizer) is None
