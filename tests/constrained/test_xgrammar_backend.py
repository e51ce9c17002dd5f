"""The optional xgrammar backend: same contract, same JSON guarantees, plus EBNF."""

import json
import random
import re

import jsonschema
import pytest

xgr = pytest.importorskip("xgrammar")

from sgl.runtime.constrained import create_grammar_backend  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_full_legal_name": {"type": "string", "maxLength": 10},
        "size": {"type": "integer", "enum": [1, 2, "x"]},
        "ip": {"type": "string", "format": "ipv4"},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    },
    "required": ["customer_full_legal_name", "size", "ip", "score"],
}


@pytest.fixture(scope="module")
def xbackend(tokenizer):
    be = create_grammar_backend("xgrammar", tokenizer, 49152, num_threads=1)
    yield be
    be.shutdown()


def test_json_walks_validate(xbackend, walker):
    base = xbackend.get_or_compile("json", json.dumps(SCHEMA)).result(timeout=120)
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    rng = random.Random(0)
    for _ in range(8):
        validator.validate(json.loads(walker.text(walker.walk(base.copy(), rng, max_steps=1500))))


def test_same_keyword_refusals(xbackend):
    with pytest.raises(ValueError, match="unsupported JSON schema keyword: multipleOf"):
        xbackend.get_or_compile("json", json.dumps({"type": "integer", "multipleOf": 3})).result(timeout=60)


def test_ebnf_and_regex(xbackend, walker):
    ebnf = 'root ::= "(" digits ("+" digits)* ")"\ndigits ::= [0-9]+'
    g = xbackend.get_or_compile("ebnf", ebnf).result(timeout=60)
    rng = random.Random(1)
    for _ in range(5):
        assert re.fullmatch(r"\([0-9]+(\+[0-9]+)*\)", walker.text(walker.walk(g.copy(), rng)))
    g = xbackend.get_or_compile("regex", r"#[0-9a-f]{6}").result(timeout=60)
    assert re.fullmatch(r"#[0-9a-f]{6}", walker.text(walker.walk(g.copy(), rng)))
    with pytest.raises(ValueError, match="invalid ebnf grammar"):
        xbackend.get_or_compile("ebnf", "root ::= (").result(timeout=60)


def test_jump_forward_and_retokenize(xbackend, tokenizer, walker):
    g = xbackend.get_or_compile("json", json.dumps(SCHEMA)).result(timeout=120)
    g.accept_token(tokenizer.convert_tokens_to_ids("{"))
    g.accept_token(tokenizer.convert_tokens_to_ids('"'))
    helper = g.try_jump_forward(tokenizer)
    text, state = g.jump_forward_str_state(helper)
    assert text.startswith("customer_full_legal_name")
    old = list(g.tokens)
    new = tokenizer.encode(tokenizer.decode(old) + text)
    g.jump_and_retokenize(old, new, state)
    assert g.tokens == new
    walker.walk(g, random.Random(2), max_steps=1500)
    value = json.loads(tokenizer.decode(g.tokens))
    assert set(value) == set(SCHEMA["required"])


def test_unknown_backend_name(tokenizer):
    with pytest.raises(ValueError, match="unknown grammar backend"):
        create_grammar_backend("llguidance", tokenizer, 49152)


def test_special_tokens_never_match_text(xbackend, tokenizer):
    """Inside a JSON string every ordinary token may follow, but no special token (<|im_start|>,
    <filename>, ...): the detokenizer drops those, so the text would not be what the grammar saw.
    The outlines backend excludes them the same way."""
    grammar = xbackend.get_or_compile("json", json.dumps({"type": "object"})).result(timeout=120).copy()
    for tid in tokenizer.encode('{"a": "b', add_special_tokens=False):
        grammar.accept_token(tid)
    mask = grammar.allocate_vocab_mask(49152, 1)
    grammar.fill_vocab_mask(mask, 0)
    allowed = {t for t in range(49152) if (int(mask[0, t // 32]) >> (t % 32)) & 1}
    assert tokenizer.encode(" text", add_special_tokens=False)[0] in allowed
    assert not allowed & set(tokenizer.all_special_ids)
