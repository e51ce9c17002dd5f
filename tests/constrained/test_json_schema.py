"""JSON-schema grammars: random walks over the real vocabulary always produce JSON that
validates (jsonschema + its 2020-12 format checker); unenforceable keywords and invalid schemas
are refused with a ValueError naming the problem."""

import json
import random
import re
from typing import List, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from sgl.runtime.constrained import build_regex_from_object, json_schema_to_regex

from sgltest.json_schemas import SCHEMAS, validator as _validator


class Address(BaseModel):
    street: str = Field(max_length=20)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Order(BaseModel):
    id: int = Field(ge=1, le=10_000)
    status: Literal["new", "paid", "shipped"]
    total: float = Field(ge=0, lt=1000)
    note: Optional[str] = Field(default=None, max_length=10)
    address: Address
    tags: List[str] = Field(default_factory=list, max_length=2)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_walks_validate(name, compile_json, walker):
    schema = SCHEMAS[name]
    base = compile_json(schema)
    validator = _validator(schema)
    rng = random.Random(name)
    for _ in range(10):
        text = walker.text(walker.walk(base.copy(), rng, max_steps=1500))
        value = json.loads(text)
        validator.validate(value)


def test_pydantic_model(backend, walker):
    regex = build_regex_from_object(Order)
    assert regex == json_schema_to_regex(Order.model_json_schema())
    base = backend.get_or_compile("json", json.dumps(Order.model_json_schema())).result(timeout=120)
    rng = random.Random(3)
    for _ in range(8):
        text = walker.text(walker.walk(base.copy(), rng, max_steps=1500))
        Order.model_validate_json(text)
        _validator(Order.model_json_schema()).validate(json.loads(text))


def test_schema_regex_language_matches_validation():
    """Strings the regex accepts validate; strings outside the bounds are rejected by it."""
    rx = re.compile(json_schema_to_regex(SCHEMAS["flat_required"]))
    assert rx.fullmatch('{"name": "Al", "age": 7}')
    assert rx.fullmatch('{"name":"Al","age":120}')
    assert not rx.fullmatch('{"name": "Al", "age": 121}')
    assert not rx.fullmatch('{"name": "Al", "age": -1}')
    assert not rx.fullmatch('{"age": 7, "name": "Al"}')  # declaration order only (a valid subset)
    assert not rx.fullmatch('{"name": "Al"}')


@pytest.mark.parametrize("keyword, schema", [
    ("multipleOf", {"type": "integer", "multipleOf": 3}),
    ("not", {"not": {"type": "string"}}),
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "minItems": 2}),
    ("else", {"if": {"type": "string"}, "else": {"type": "integer"}}),
    ("propertyNames", {"type": "object", "patternProperties": {"^x": {}}, "propertyNames": {"maxLength": 3}}),
    ("$dynamicRef", {"$dynamicRef": "#node"}),
    ("contains", {"type": "array", "contains": {"type": "integer"}}),
    ("minProperties", {"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 1}),
    ("maxLength", {"type": "string", "format": "email", "maxLength": 5}),
    ("minLength", {"type": "string", "pattern": "^a+$", "minLength": 3}),
    ("allOf", {"allOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}]}),
])
def test_unsupported_keywords_are_named(keyword, schema):
    with pytest.raises(ValueError, match=rf"unsupported JSON schema keyword: {re.escape(keyword)}\b"):
        json_schema_to_regex(schema)


@pytest.mark.parametrize("schema, reason", [
    ('{"type": "object",', "not valid JSON"),
    ({"type": "foo"}, "invalid JSON schema at type"),
    ({"type": "integer", "minimum": "3"}, "invalid JSON schema at minimum"),
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"$ref": "http://example.com/s.json"}, "only local references"),
    ({"$defs": {"a": {"$anchor": "x", "type": "null"}}, "$ref": "#x"}, "only local references"),
    ({"properties": {"a": {"$id": "http://x/y", "type": "null"}}}, "unsupported JSON schema keyword: \\$id"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "cannot be satisfied"),
    ({"type": "object", "properties": {}, "required": ["a"], "additionalProperties": False}, "cannot be satisfied"),
    ([1, 2], "expected an object"),
])
def test_invalid_schemas(schema, reason):
    with pytest.raises(ValueError, match=reason):
        json_schema_to_regex(schema)


def test_invalid_schema_fails_only_its_future(backend):
    bad = backend.get_or_compile("json", json.dumps({"type": "integer", "multipleOf": 3}))
    good = backend.get_or_compile("json", json.dumps({"type": "boolean"}))
    with pytest.raises(ValueError, match="multipleOf"):
        bad.result(timeout=60)
    assert good.result(timeout=60).compiled.regex == "(?:true|false)"


def test_whitespace_pattern_option(tokenizer, walker):
    from sgl.runtime.constrained import GrammarBackend

    schema = SCHEMAS["flat_required"]
    assert "[ ]?" in json_schema_to_regex(schema)  # tight default
    assert ":-" not in json_schema_to_regex(schema, whitespace_pattern="")
    with pytest.raises(ValueError, match="non-whitespace"):
        json_schema_to_regex(schema, whitespace_pattern="[ a]*")
    be = GrammarBackend(tokenizer, 49152, whitespace_pattern="[\n ]{0,2}", num_threads=1)
    try:
        g = be.get_or_compile("json", json.dumps(schema)).result(timeout=120)
        rng = random.Random(9)
        for _ in range(5):
            text = walker.text(walker.walk(g.copy(), rng))
            _validator(schema).validate(json.loads(text))
    finally:
        be.shutdown()


@pytest.mark.slow  # compiling free-form JSON over the 49K vocabulary takes about a minute on 2 cores
def test_any_json(backend, walker):
    g = backend.get_or_compile("json", "$$ANY$$").result(timeout=120)
    rng = random.Random(11)
    for _ in range(5):
        json.loads(walker.text(walker.walk(g.copy(), rng, max_steps=1500)))


def test_draft4_boolean_exclusive_bounds(compile_json, walker):
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
              "minimum": 3, "exclusiveMinimum": True, "maximum": 6, "exclusiveMaximum": True}
    rx = re.compile(json_schema_to_regex(schema))
    assert [n for n in range(0, 10) if rx.fullmatch(str(n))] == [4, 5]
    number = dict(schema, type="number")
    rx = re.compile(json_schema_to_regex(number))
    assert rx.fullmatch("3.5") and not rx.fullmatch("3") and not rx.fullmatch("6") and rx.fullmatch("5.999")


def test_root_ref_and_recursion_cut():
    schema = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    rx = json_schema_to_regex(schema, max_recursion_depth=2)
    assert re.fullmatch(rx, '{"child": {"child": {}}}')
    assert not re.fullmatch(rx, '{"child": {"child": {"child": {}}}}')


@pytest.mark.parametrize("schema, plain", [
    ({"type": "object", "x-kubernetes-group-version-kind": [{"kind": "Pod"}], "self": {"vendor": "a"},
      "properties": {"id": {"type": "integer", "_format": "int64", "descrption": "typo"}}, "required": ["id"]},
     {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
    ({"id": "http://example.com/draft4", "$schema": "http://json-schema.org/draft-04/schema#", "type": "boolean"},
     {"type": "boolean"}),
    ({"type": "string", "format": "semverVersion", "maxLength": 5}, {"type": "string", "maxLength": 5}),
    ({"type": "string", "contentEncoding": "base64", "maxLength": 4}, {"type": "string", "maxLength": 4}),
])
def test_unknown_keywords_and_formats_are_annotations(schema, plain):
    """JSON Schema ignores keywords outside its vocabularies (and formats outside the spec)."""
    assert json_schema_to_regex(schema) == json_schema_to_regex(plain)
