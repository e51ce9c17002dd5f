"""JSON schema -> xgrammar EBNF (runtime/constrained/json_schema_ebnf.py): the same language as
the regex path (json_schema_to_regex), same refusals, but $ref targets are named rules, so
recursive and shared schemas that the regex path refuses compile and generate valid JSON.

Everything here runs on a 257-token byte-level vocabulary (one token per byte, then EOS), so
compiling is fast; the sweep over the whole corpus with the real tokenizer is marked slow."""

import json
import os
import random
import re
import time

import jsonschema
import pytest

xgr = pytest.importorskip("xgrammar")

from sgl.runtime.constrained.json_schema import _Compiler, json_schema_to_regex  # noqa: E402
from sgl.runtime.constrained.json_schema_ebnf import json_schema_to_ebnf, regex_to_ebnf  # noqa: E402
from sgl.runtime.constrained.vocab import TokenVocabulary  # noqa: E402
from sgl.runtime.constrained.vocab_mask import unpack_bitmask  # noqa: E402
from sgl.runtime.constrained.xgrammar_backend import XGrammarBackend  # noqa: E402

from sgltest.json_schemas import SCHEMAS, validator  # noqa: E402

EOS = 256
CORPUS = os.path.join(os.path.dirname(__file__), "..", "data", "jsonschemabench_sample.json")
# Corpus schemas the regex path refuses or cannot build in reasonable time/memory (regex of
# 0.5-64 million characters, or 130K-390K characters whose automaton takes minutes)
FORMERLY_REFUSED = (40, 45, 48, 49, 50, 51, 52, 53, 55, 57, 58, 59, 75, 79, 91, 110, 114, 116, 118)

TREE = {
    "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}}, "required": ["v"]}},
    "$ref": "#/$defs/node",
}
LINKED_LIST = {
    "type": "object",
    "properties": {"head": {"$ref": "#/definitions/cell"}},
    "required": ["head"],
    "definitions": {"cell": {"type": "object", "properties": {
        "value": {"type": "string", "maxLength": 3},
        "next": {"anyOf": [{"$ref": "#/definitions/cell"}, {"type": "null"}]}}, "required": ["value", "next"]}},
}
# a recursion the document must take forever, next to an optional one it can stop
FOREVER_OPTIONAL = {
    "$defs": {"loop": {"type": "array", "items": {"$ref": "#/$defs/loop"}, "minItems": 1}},
    "type": "object", "properties": {"a": {"type": "integer"}, "never": {"$ref": "#/$defs/loop"}}, "required": ["a"],
}

EXTRA = {
    "tree": TREE,
    "linked_list": LINKED_LIST,
    "forever_optional": FOREVER_OPTIONAL,
    "ref_siblings": {"$defs": {"s": {"type": "string", "maxLength": 4}},
                     "type": "array", "prefixItems": [{"$ref": "#/$defs/s", "minLength": 2}, {"$ref": "#/$defs/s"}],
                     "items": False},
    "self_union": {"anyOf": [{"type": "array", "items": {"$ref": "#"}, "maxItems": 2}, {"type": "integer", "minimum": 0, "maximum": 9}]},
    "closed_object": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99},
                                                        "tag": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2}$"}},
                      "required": ["id"], "additionalProperties": False},
    "open_object": {"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
    "email_const": {"type": "object", "properties": {"to": {"type": "string", "format": "email"},
                                                     "kind": {"const": "mail\n\u00e9\U0001F600"}}, "required": ["to", "kind"]},
    "ipv6_or_date": {"anyOf": [{"type": "string", "format": "ipv6"}, {"type": "string", "format": "date"}]},
    "any_value": {},
    "string_len": {"type": "string", "minLength": 2, "maxLength": 5},
    "decimal_bounds": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25},
}
ALL = {**SCHEMAS, **EXTRA}
RECURSIVE = {"recursive", "tree", "linked_list", "self_union"}  # the regex path cuts these at a depth


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def byte_backend():
    vocab = TokenVocabulary.from_bytes([bytes([b]) for b in range(256)] + [None], eos_token_ids=[EOS])
    be = XGrammarBackend(vocab, num_threads=1)
    yield be
    be.shutdown()


def accepts(compiled, text: str) -> bool:
    """Whether the grammar accepts the whole of ``text`` and then EOS."""
    m = xgr.GrammarMatcher(compiled)
    return (not text or m.accept_string(text)) and m.accept_token(EOS)


def walk(compiled, rng: random.Random, max_steps: int = 6000) -> str:
    """A random document of the grammar, byte by byte; closers (``"]}``) get likelier with every
    step so the walk finishes (EOS is taken as soon as the grammar allows it)."""
    m = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, EOS + 1)
    out = bytearray()
    for step in range(max_steps):
        m.fill_next_token_bitmask(mask)
        allowed = unpack_bitmask(mask, EOS + 1)[0].nonzero().flatten().tolist()
        assert allowed, f"the grammar allows nothing after {bytes(out)!r}"
        if EOS in allowed:
            assert m.accept_token(EOS)
            return out.decode("utf-8")
        closers = [t for t in allowed if t in b'"]}']
        bias = min(0.95, 0.2 + step / 400)
        pool = closers if closers and rng.random() < bias else allowed
        tid = rng.choice(pool)
        assert m.accept_token(tid)
        out.append(tid)
    raise AssertionError(f"walk did not finish in {max_steps} steps: {bytes(out[-300:])!r}")


_NOISE = ' "{}[],:0123456789.-+eEtruefalsn\\x\u00e9'


def mutations(text: str, rng: random.Random, n: int = 8):
    out = [text[:-1], text + " ", text[1:], " " + text]
    for _ in range(n):
        i = rng.randrange(len(text) + 1)
        op = rng.randrange(3)
        if op == 0 and i < len(text):
            out.append(text[:i] + text[i + 1:])
        elif op == 1:
            out.append(text[:i] + rng.choice(_NOISE) + text[i:])
        elif i < len(text):
            out.append(text[:i] + rng.choice(_NOISE) + text[i + 1:])
    return out


# ---------------------------------------------------------------- the same language as the regex


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_language_as_regex(name, byte_backend, regex_sampler, monkeypatch):
    """Strings sampled from the regex, their mutations, and walks of the grammar: the grammar
    accepts exactly what re.fullmatch(regex) accepts (recursive schemas: at least that, and
    everything it accepts validates). The regex is built with the grammar's string setting
    (length-bounded strings without escapes: test_bounded_strings_have_no_escapes)."""
    schema = ALL[name]
    monkeypatch.setattr(_Compiler, "counted_escapes", False)
    rx = re.compile(json_schema_to_regex(schema))
    compiled = byte_backend.compile("json", json.dumps(schema))
    check = validator(schema)
    rng = random.Random(name)
    sample = regex_sampler(rx.pattern)
    recursive = name in RECURSIVE
    for _ in range(12):
        text = sample(rng, max_len=200)
        assert accepts(compiled, text), text
        for other in mutations(text, rng):
            if recursive:
                if rx.fullmatch(other):
                    assert accepts(compiled, other), other
                elif accepts(compiled, other):
                    check.validate(json.loads(other))
            else:
                assert accepts(compiled, other) == bool(rx.fullmatch(other)), other
    for _ in range(6):
        text = walk(compiled, rng)
        check.validate(json.loads(text))
        if not recursive:
            assert rx.fullmatch(text), text


def test_bounded_strings_have_no_escapes(byte_backend):
    """xgrammar fills masks inside a counted repeat of (character | escape) in tens of ms a token:
    the grammar counts unescaped characters only where a string has a length bound (a valid
    subset); unbounded strings keep their escapes."""
    bounded = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 8}}, "required": ["s"]}
    free = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    at_least = {"type": "object", "properties": {"s": {"type": "string", "minLength": 2}}, "required": ["s"]}
    compiled = {name: byte_backend.compile("json", json.dumps(s))
                for name, s in (("bounded", bounded), ("free", free), ("at_least", at_least))}
    assert accepts(compiled["bounded"], '{"s":"abc"}') and not accepts(compiled["bounded"], '{"s":"a\\"b"}')
    assert not accepts(compiled["bounded"], '{"s":"abcdefghi"}')
    assert accepts(compiled["free"], '{"s":"a\\"b\\n"}')
    assert accepts(compiled["at_least"], '{"s":"ab"}') and not accepts(compiled["at_least"], '{"s":"\\n\\n"}')
    # the outlines backend's regex keeps escapes in bounded strings
    assert re.fullmatch(json_schema_to_regex(bounded), '{"s":"a\\"b"}')


@pytest.mark.parametrize("ws", ["", "[ \t\n]*", "[\n ]{0,2}"])
def test_whitespace_patterns(ws, byte_backend, monkeypatch):
    monkeypatch.setattr(_Compiler, "counted_escapes", False)
    schema = SCHEMAS["array_of_objects"]
    rx = re.compile(json_schema_to_regex(schema, ws))
    compiled = byte_backend.compiler.compile_grammar(json_schema_to_ebnf(schema, ws))
    docs = ['{"items":[{"sku":"AB123","qty":2}]}', '{ "items" : [ ] }', '{\n"items":\t[{"sku":"AB123",\n "qty":9}\n]}',
            '{"items":[{"sku":"AB123","qty":2},{"sku":"CD456","qty":3}]}', '{  "items":[]}']
    for doc in docs:
        assert accepts(compiled, doc) == bool(rx.fullmatch(doc)), doc
    rng = random.Random(ws)
    for _ in range(5):
        assert rx.fullmatch(walk(compiled, rng))


def test_recursion_is_unbounded(byte_backend):
    """The regex path cuts recursion at a depth; the grammar's rules recurse freely."""
    compiled = byte_backend.compile("json", json.dumps(TREE))
    deep = '{"v":1}'
    for k in range(12):
        deep = '{"v":%d,"kids":[%s,{"v":0}]}' % (k % 10, deep)
    check = validator(TREE)
    check.validate(json.loads(deep))
    assert accepts(compiled, deep)
    assert not re.fullmatch(json_schema_to_regex(TREE), deep)
    assert not accepts(compiled, deep.replace('"v":0', '"v":10', 1))
    assert not accepts(compiled, deep.replace('"v":1}', '"v":1,"x":2}', 1))
    assert not accepts(compiled, '{"v":1,"kids":[{"v":1},{"v":1},{"v":1},{"v":1}]}')  # maxItems 3

    compiled = byte_backend.compile("json", json.dumps(LINKED_LIST))
    chain = "null"
    for k in range(40):
        chain = '{"value":"%d","next":%s}' % (k, chain)
    assert accepts(compiled, '{"head":%s}' % chain)
    assert not accepts(compiled, '{"head":%s}' % chain.replace('"5"', '"5555"'))


def test_grammar_shape(byte_backend):
    """One rule per $ref target, referenced by name from every use; linear size where the
    regex path grows exponentially (and refuses)."""
    grammar = json_schema_to_ebnf(TREE)
    assert grammar.splitlines()[0] == "root ::= node"
    assert grammar.count("node ::=") == 1 and len(re.findall(r"\bnode\b", grammar)) == 4
    chain = {"$defs": {"d0": {"type": "integer", "minimum": 0, "maximum": 5}}, "$ref": "#/$defs/d13"}
    for k in range(1, 14):
        chain["$defs"][f"d{k}"] = {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{k - 1}"},
                                                                     "b": {"$ref": f"#/$defs/d{k - 1}"}}, "required": ["a", "b"]}
    grammar = json_schema_to_ebnf(chain)
    assert len(grammar) < 3000 and grammar.count("::=") == 15
    with pytest.raises(ValueError, match="too large to compile"):
        json_schema_to_regex(chain)
    assert xgr.Grammar.from_ebnf(grammar) is not None
    # literals, classes, escapes and repeats translate faithfully
    for rx, yes, no in [(r'a\"b\\c\n', ['a"b\\c\n'], ['a"b\\c']), (r"[^a-c\]\-]{2,3}x?", ["zz", "é€x", "zzz"], ["z", "zb", "-]"]),
                        (r"(?:ab|c)+|\d{2}", ["abcab", "12"], ["", "a", "123"]), (r"[\x00-\x1f]\u00e9\U0001F600", ["\x01é😀"], ["aé😀"])]:
        compiled = byte_backend.compiler.compile_grammar(regex_to_ebnf(rx))
        for text in yes + no:
            assert accepts(compiled, text) == (text in yes) == bool(re.fullmatch(rx, text)), (rx, text)


# ---------------------------------------------------------------- refusals


REFUSED = [
    {"type": "integer", "multipleOf": 3},
    {"not": {"type": "string"}},
    {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "minItems": 2},
    {"if": {"type": "string"}, "else": {"type": "integer"}},
    {"type": "object", "patternProperties": {"^x": {}}, "propertyNames": {"maxLength": 3}},
    {"$dynamicRef": "#node"},
    {"type": "array", "contains": {"type": "integer"}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 1},
    {"type": "string", "format": "email", "maxLength": 5},
    {"type": "string", "pattern": "^a+$", "minLength": 3},
    {"type": "string", "pattern": "^(?=a)a$"},
    {"allOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}]},
    {"$defs": {"x": {"type": "number", "multipleOf": 0.5}}, "type": "array", "items": {"$ref": "#/$defs/x"}},
    '{"type": "object",',
    {"type": "foo"},
    {"type": "integer", "minimum": "3"},
    {"$ref": "#/$defs/missing"},
    {"$ref": "http://example.com/s.json"},
    {"$defs": {"a": {"$anchor": "x", "type": "null"}}, "$ref": "#x"},
    {"properties": {"a": {"$id": "http://x/y", "type": "null"}}},
    {"type": "integer", "minimum": 5, "maximum": 4},
    {"type": "object", "properties": {}, "required": ["a"], "additionalProperties": False},
    {"allOf": [{"type": "string"}, {"type": "integer"}]},
    [1, 2],
]


@pytest.mark.parametrize("schema", REFUSED, ids=range(len(REFUSED)))
def test_same_refusals(schema, byte_backend):
    with pytest.raises(ValueError) as by_regex:
        json_schema_to_regex(schema)
    with pytest.raises(ValueError) as by_grammar:
        json_schema_to_ebnf(schema)
    assert str(by_grammar.value) == str(by_regex.value)
    text = schema if isinstance(schema, str) else json.dumps(schema)
    with pytest.raises(ValueError) as by_backend:
        byte_backend.compile("json", text)
    assert str(by_backend.value) == str(by_regex.value)


@pytest.mark.parametrize("schema", [
    {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}, "required": ["next"]}}, "$ref": "#/$defs/n"},
    {"type": "array", "items": {"$ref": "#"}, "minItems": 1},
    {"$defs": {"a": {"type": "array", "prefixItems": [{"$ref": "#/$defs/b"}], "minItems": 1},
               "b": {"oneOf": [{"$ref": "#/$defs/a"}, {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "required": ["x"]}]}},
     "type": "object", "properties": {"k": {"$ref": "#/$defs/b"}}, "required": ["k"]},
])
def test_recursion_required_forever_is_refused(schema, byte_backend):
    """No finite document: refused (xgrammar itself would accept the grammar and never end)."""
    with pytest.raises(ValueError, match="cannot be satisfied by generated output: no finite document"):
        json_schema_to_ebnf(schema)
    with pytest.raises(ValueError, match="cannot be satisfied"):
        json_schema_to_regex(schema)
    with pytest.raises(ValueError, match="no finite document"):
        byte_backend.compile("json", json.dumps(schema))


def test_forever_recursion_in_an_optional_place_is_dropped(byte_backend):
    compiled = byte_backend.compile("json", json.dumps(FOREVER_OPTIONAL))
    assert accepts(compiled, '{"a":1}')
    assert not accepts(compiled, '{"a":1,"never":[]}')
    assert "loop" not in json_schema_to_ebnf(FOREVER_OPTIONAL)


def test_schema_private_use_characters_are_not_placeholders(byte_backend):
    """Placeholders skip the private-use code points a schema itself uses."""
    schema = {"type": "object", "properties": {"\U000F0000": {"const": "\U000F0001"}, "r": {"$ref": "#/$defs/x"}},
              "required": ["\U000F0000", "r"], "$defs": {"x": {"type": "string", "pattern": "^\\U000F0002$"}}}
    compiled = byte_backend.compile("json", json.dumps(schema))
    assert accepts(compiled, '{"\U000F0000":"\U000F0001","r":"\U000F0002"}')
    assert not accepts(compiled, '{"\U000F0000":"\U000F0002","r":"\U000F0002"}')


# ---------------------------------------------------------------- the corpus


def _corpus():
    with open(CORPUS) as f:
        return json.load(f)["items"]


def _corpus_validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("index", [40, 51, 79, 118])
def test_formerly_refused_corpus_schemas(index, byte_backend):
    """Real-world schemas the regex path cannot build now compile; random documents validate."""
    schema = _corpus()[index]["schema"]
    compiled = byte_backend.compile("json", json.dumps(schema))
    check = _corpus_validator(schema)
    rng = random.Random(index)
    for _ in range(3):
        check.validate(json.loads(walk(compiled, rng, max_steps=20000)))


def _walk_tokens(grammar, rng, vocab_size: int, eos: int, closing, punct, max_steps: int = 20000):
    """Token ids of one random document (None if it did not finish): uniform among the allowed
    tokens, but more and more often among closers (``"]}``) or else single punctuation tokens, so
    strings, arrays, objects and patterns end."""
    import torch

    mask = grammar.allocate_vocab_mask(vocab_size, 1)
    ids = []
    for step in range(max_steps):
        mask.fill_(-1)
        grammar.fill_vocab_mask(mask, 0)
        allowed = unpack_bitmask(mask, vocab_size)[0]
        if bool(allowed[eos]):
            grammar.accept_token(eos)
            return ids
        bias, pool = min(0.97, 0.1 + step / 500), allowed
        for prefer in (closing, punct):
            if rng.random() < bias and bool((allowed & prefer).any()):
                pool = allowed & prefer
                break
        choices = torch.nonzero(pool).flatten()
        tid = int(choices[rng.randrange(choices.numel())])
        grammar.accept_token(tid)
        ids.append(tid)
    return None


@pytest.mark.slow
def test_corpus_sweep_with_the_model_tokenizer(tokenizer):
    """All 120 corpus schemas through XGrammarBackend as the server builds it (the default
    model's tokenizer), single-threaded; 5 random walks each must validate. The only invalid
    outputs allowed are oneOf branches that overlap, which the walker (regex path too) generates
    as anyOf (docs/constrained.md). ``pytest -m slow -s`` prints the summary (about 2 minutes)."""
    import statistics

    import torch

    from sgl.runtime.constrained import create_grammar_backend

    vocab, start = 49152, time.perf_counter()
    be = create_grammar_backend("xgrammar", tokenizer, vocab, num_threads=1)
    closing = torch.zeros(vocab, dtype=torch.bool)
    punct = torch.zeros(vocab, dtype=torch.bool)
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        closing[tid] = bool(text) and set(text) <= set('"]}')
        punct[tid] = len(text) == 1 and not text.isalnum() and text not in "[{"
    refused, invalid, overlapping, times, docs = {}, [], 0, [], 0
    for index, item in enumerate(_corpus()):
        t0 = time.perf_counter()
        try:
            base = be.get_or_compile("json", json.dumps(item["schema"])).result(timeout=600)
        except ValueError as e:
            refused[index] = str(e)
            continue
        times.append(time.perf_counter() - t0)
        check = _corpus_validator(item["schema"])
        rng = random.Random(index)
        for _ in range(5):
            ids = _walk_tokens(base.copy(), rng, vocab, tokenizer.eos_token_id, closing, punct)
            assert ids is not None, f"corpus schema {index}: walk did not finish"
            errors = list(check.iter_errors(json.loads(tokenizer.decode(ids))))
            docs += 1
            if errors and all("is valid under each of" in e.message for e in errors):
                overlapping += 1
            elif errors:
                invalid.append((index, errors[0].message[:200]))
    be.shutdown()
    print(f"\ncompiled {len(times)} of 120 in {sum(times):.1f} s (p50 {statistics.median(times):.3f} s, max "
          f"{max(times):.3f} s); {docs} documents: {docs - len(invalid) - overlapping} valid, {overlapping} "
          f"oneOf overlaps, {len(invalid)} invalid; refused {refused}; wall {time.perf_counter() - start:.0f} s")
    assert not invalid, invalid
    assert set(refused) == {47, 78}, refused  # multipleOf; allOf of two different 'if'
