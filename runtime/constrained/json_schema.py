"""JSON schema -> regex whose every match is a JSON document valid against the schema.

Why our own walker and not ``outlines_core.json_schema.build_regex_from_schema``: tested against
outlines-core 0.2.14, that function accepts-but-ignores ``minimum``/``maximum``/
``exclusive*``, ``multipleOf``, ``uniqueItems``, ``contains``, ``minProperties``,
``patternProperties``, ``dependentRequired``; concatenates ``allOf`` branches (``{..}{..}``);
drops ``pattern`` when ``minLength`` is present and ``format`` when ``maxLength`` is; ignores a
``required`` name missing from ``properties``; ignores ``type`` next to ``enum``; pastes property
names with a ``"`` unescaped; and its ``email`` regex can emit a raw ``"``. Each of these lets an
accepted request produce invalid output. This module walks the schema itself, reuses
outlines-core's regex dialect (so the result compiles with its ``Index``), and for every keyword
either enforces it exactly, generates a provably valid subset, or raises
``ValueError("unsupported JSON schema keyword: <name>")``.

Subset choices (outputs stay valid, some valid documents are not generated): only declared
properties are emitted, in declaration order; strings with a ``pattern`` fully match it;
recursion through ``$ref`` is cut at ``max_recursion_depth``; bounded numbers have no exponent.
"""

import json
import logging
import math
import re
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple, Union

import jsonschema
from jsonschema.validators import validator_for

from .json_containers import JSON_NUMBER_CAPPED, ContainerRegexMixin, counted_weight
from .number_regex import decimal_range_regex, integer_range_regex
from .schema_merge import Unsatisfiable, merge_all_of
from .schema_vocab import ANNOTATIONS, UNSUPPORTED_KEYWORDS, known_keywords
from .pattern_regex import pattern_content_regex, pattern_min_length
from .string_regex import (
    SUPPORTED_FORMATS,
    escape_literal,
    format_length_bounds,
    format_string_regex,
    string_length_regex,
)

__all__ = [
    "DEFAULT_WHITESPACE_PATTERN",
    "ANY_JSON",
    "build_regex_from_object",
    "json_schema_to_regex",
    "UNSUPPORTED_KEYWORDS",
]

# Tight by default: one optional space. Small models given `[\n\t ]*` tend to loop on blanks.
DEFAULT_WHITESPACE_PATTERN = "[ ]?"
ANY_JSON = "$$ANY$$"  # SGLang's key for "any JSON value" (OpenAI json_object mode)

_STRING_KW = {"minLength", "maxLength", "pattern", "format"}
_NUMBER_KW = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_OBJECT_KW = {"properties", "required", "additionalProperties", "minProperties", "maxProperties",
              "patternProperties", "propertyNames", "unevaluatedProperties"}
_ARRAY_KW = {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"}
logger = logging.getLogger(__name__)
_TYPES = ("string", "integer", "number", "boolean", "null", "object", "array")
# Unbounded integers stop at 16 digits (beyond 2**53 JSON parsers lose precision anyway): a small
# model sampling at temperature 1 can otherwise emit digits until max_new_tokens.
MAX_INT_DIGITS = 16
_JSON_INTEGER = r"-?(?:0|[1-9][0-9]{0,%d})" % (MAX_INT_DIGITS - 1)
# Larger regexes take outlines-core minutes and gigabytes to turn into a token index.
MAX_REGEX_CHARS = 500_000
# Counted repeats ({m,n}) cost automaton states, and a free-text state costs outlines-core about
# 0.6 MB and 6 ms at vocab 49K. A string's maxLength is generated up to the first of these caps
# that keeps the schema's total counted_weight within COUNTED_WEIGHT_BUDGET (a valid subset:
# shorter strings); arrays are capped in json_containers.py.
COUNTED_CHAR_CAPS = (512, 256, 128, 64)
COUNTED_WEIGHT_BUDGET = 4096
_EXACT_FLOAT_LIMIT = 2.0**53  # below this every integer is a double, so repr() bounds are exact


SchemaLike = Union[str, dict, bool, type]


def _load_schema(schema: SchemaLike) -> Union[dict, bool]:
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()  # pydantic v2 model class
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON schema: not valid JSON ({e})") from None
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"invalid JSON schema: expected an object, got {type(schema).__name__}")
    return schema


def _check_schema(schema: Union[dict, bool]):
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON schema at {where}: {e.message}") from None
    return cls


def _validate_whitespace(pattern: str) -> str:
    """The whitespace pattern may only produce JSON whitespace; checked on its automaton."""
    import interegular

    try:
        fsm = interegular.parse_pattern(pattern).to_fsm()
        allowed = interegular.parse_pattern("[ \t\n\r]*").to_fsm()
    except Exception as e:  # interegular raises several private exception types
        raise ValueError(f"invalid whitespace pattern {pattern!r}: {e}") from None
    if not fsm.issubset(allowed):
        raise ValueError(f"whitespace pattern {pattern!r} can match non-whitespace characters")
    return pattern


def _type_set(node: dict) -> Optional[set]:
    t = node.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def _json_key(value: Any) -> Tuple[str, str]:
    """Identity of a JSON value for set operations (1 and true differ, 1 and 1.0 do not)."""
    if isinstance(value, bool) or value is None:
        return ("lit", json.dumps(value))
    if isinstance(value, (int, float)):
        return ("num", repr(float(value)) if not isinstance(value, int) or abs(value) < 2**53 else str(value))
    return ("json", json.dumps(value, sort_keys=True))


def _literal_regex(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return escape_literal(text)


def _alternation(parts: List[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return "(?:" + "|".join(parts) + ")"


def _smallest_double_at_least(bound: Union[int, float], exclusive: bool) -> float:
    """Smallest double d with d >= bound (d > bound if exclusive), compared exactly."""
    if not math.isfinite(float(bound)) or abs(bound) > 1e300:
        raise ValueError(f"numeric bound {bound!r} is too large")
    d = float(bound)
    while d < bound or (exclusive and d == bound):
        d = math.nextafter(d, math.inf)
    return d


def _decimal_of(d: float) -> Decimal:
    """A decimal that parses back to ``d`` and orders against every integer as ``d`` does."""
    return Decimal(repr(d)) if abs(d) < _EXACT_FLOAT_LIMIT else Decimal(d)


class _Compiler(ContainerRegexMixin):
    """Walks one schema; each ``node`` call returns the regex of that subschema."""

    #: whether a string with minLength/maxLength may hold escape sequences (see _RuleCompiler)
    counted_escapes = True

    def __init__(self, root, validator_cls, whitespace: str, max_recursion_depth: int, any_depth: int,
                 max_counted_chars: int = 512):
        self.root = root
        self.validator = validator_cls(root, format_checker=validator_cls.FORMAT_CHECKER)
        self.ws = "(?:" + whitespace + ")" if whitespace else ""
        self.max_recursion_depth = max_recursion_depth
        self.any_depth = any_depth
        self.max_counted_chars = max_counted_chars
        self._ref_depth: Dict[str, int] = {}

    # ------------------------------------------------------------ dispatch

    def node(self, schema) -> str:
        if schema is True:
            return self.any_value(self.any_depth)
        if schema is False:
            raise Unsatisfiable("the schema 'false' matches nothing")
        if not isinstance(schema, dict):
            raise ValueError(f"invalid JSON schema: expected an object, got {schema!r}")
        is_root = schema is self.root
        schema = self._check_keywords(known_keywords(schema))
        if "$id" in schema and not is_root:
            # a nested $id moves the base URI of the refs below it; we resolve from the root only
            raise ValueError("unsupported JSON schema keyword: $id (inside a subschema)")
        if "$ref" in schema:
            return self._ref(schema)
        if "allOf" in schema:
            return self.node(self._merged_all_of(schema))
        if "if" in schema or "then" in schema or "else" in schema:
            return self._conditional(schema)
        if {"dependentRequired", "dependentSchemas", "dependencies"} & set(schema):
            return self.node(self._lowered_dependencies(schema))
        if "enum" in schema or "const" in schema:
            return self._enum(schema)
        if "anyOf" in schema or "oneOf" in schema:
            return self._union(schema)
        return self._typed(schema)

    @staticmethod
    def _check_keywords(schema: dict) -> dict:
        """``schema`` with a trivial ``not`` folded away; ValueError for an unsupported keyword."""
        if "not" in schema:
            negated = schema["not"]
            if negated is True or (isinstance(negated, dict) and not set(known_keywords(negated)) - ANNOTATIONS):
                raise Unsatisfiable("'not' of a schema that accepts everything")
            if negated is False:
                schema = {k: v for k, v in schema.items() if k != "not"}
        for key in schema:
            if key in UNSUPPORTED_KEYWORDS:
                raise ValueError(f"unsupported JSON schema keyword: {key}")
        return schema

    # ------------------------------------------------------------ references and combinators

    def _resolve(self, ref: str):
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise ValueError(f"unsupported JSON schema $ref {ref!r}: only local references (#/...) are supported")
        from urllib.parse import unquote

        target = self.root
        for part in [p for p in ref[1:].split("/") if p != ""]:
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise ValueError(f"invalid JSON schema: $ref {ref!r} does not resolve")
        return target

    def _siblings(self, schema: dict, *drop: str) -> dict:
        return {k: v for k, v in known_keywords(schema).items() if k not in ANNOTATIONS and k not in drop}

    def _flatten(self, schema):
        """Resolve a top-level $ref and merge a top-level allOf (no recursion into children)."""
        if not isinstance(schema, dict):
            return schema
        schema = known_keywords(schema)
        if "$ref" in schema:
            rest = self._siblings(schema, "$ref")
            target = self._flatten(self._resolve(schema["$ref"]))
            return merge_all_of([target, rest]) if rest else target
        if "allOf" in schema:
            return self._merged_all_of(schema)
        return schema

    def _merged_all_of(self, schema: dict):
        parts = [self._flatten(s) for s in schema["allOf"]]
        rest = self._siblings(schema, "allOf")
        return merge_all_of(parts + ([rest] if rest else []))

    def _ref(self, schema: dict) -> str:
        ref = schema["$ref"]
        depth = self._ref_depth.get(ref, 0)
        if depth >= self.max_recursion_depth:
            raise Unsatisfiable(f"recursion through {ref} is deeper than {self.max_recursion_depth}")
        self._ref_depth[ref] = depth + 1
        try:
            target = self._resolve(ref)
            rest = self._siblings(schema, "$ref")
            return self.node(merge_all_of([self._flatten(target), rest]) if rest else target)
        finally:
            self._ref_depth[ref] = depth

    def _conditional(self, schema: dict) -> str:
        """``if``/``then``/``else``: generate values that satisfy ``if`` and ``then`` (a valid
        subset); without ``then`` and ``else``, ``if`` asserts nothing. Reaching ``else`` would need
        values that fail ``if``, which a regex cannot promise: refused."""
        rest = {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
        cond, then, other = schema.get("if"), schema.get("then"), schema.get("else")
        if cond is None or (then is None and other is None):
            return self.node(rest)
        if then is None:
            raise ValueError("unsupported JSON schema keyword: else (without then)")
        try:
            return self.node({"allOf": [rest, cond, then]})
        except Unsatisfiable:
            raise ValueError("unsupported JSON schema keyword: else (no value satisfies if and then)") from None

    def _lowered_dependencies(self, schema: dict) -> dict:
        """``dependentRequired`` / ``dependentSchemas`` / draft-7 ``dependencies`` as plain object
        keywords: a required property brings its dependencies in (more required names, or its
        schema merged through allOf); an optional one with dependencies is never emitted."""
        deps = dict(schema.get("dependencies", {}))
        deps.update(schema.get("dependentRequired", {}))
        deps.update(schema.get("dependentSchemas", {}))
        out = {k: v for k, v in schema.items() if k not in ("dependencies", "dependentRequired", "dependentSchemas")}
        required = list(out.get("required", []))
        merged, grew = [], True
        while grew:
            grew = False
            for name, dep in deps.items():
                if name not in required or name in merged:
                    continue
                merged.append(name)
                grew = True
                if isinstance(dep, list):
                    required += [d for d in dep if d not in required]
                elif dep is not True:
                    out["allOf"] = list(out.get("allOf", [])) + [dep]
        props = dict(out.get("properties", {}))
        for name in deps:
            if name not in required:
                props[name] = False  # optional and conditional: left out (no arbitrary keys either)
        out["properties"], out["required"] = props, required
        return out

    def _enum(self, schema: dict) -> str:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        check = self.validator.evolve(schema=schema)
        seen, parts = set(), []
        for value in values:
            key = _json_key(value)
            if key not in seen and check.is_valid(value):
                seen.add(key)
                parts.append(_literal_regex(value))
        if not parts:
            raise Unsatisfiable("no enum/const value satisfies the rest of its schema")
        return _alternation(parts)

    def _union(self, schema: dict) -> str:
        if "anyOf" in schema and "oneOf" in schema:
            raise ValueError("unsupported JSON schema keyword: oneOf (together with anyOf)")
        key = "oneOf" if "oneOf" in schema else "anyOf"
        rest = self._siblings(schema, key)
        branches = [{"allOf": [rest, b]} if rest else b for b in schema[key]]
        if key == "oneOf" and not self._one_of_disjoint(branches):
            exclusive = self._exclusive_by_required(schema[key], branches)
            if exclusive is branches:
                # overlapping branches are generated as anyOf: an output may match two of them
                # (docs/constrained.md says so); disjoint ones (different consts...) are exact
                logger.debug("oneOf branches may overlap; generating them as anyOf")
            branches = exclusive
        parts = []
        for branch in branches:
            try:
                parts.append(self.node(branch))
            except Unsatisfiable:
                continue  # another branch still yields valid output
        if not parts:
            raise Unsatisfiable(f"no {key} branch can be generated")
        return _alternation(parts)

    # ------------------------------------------------------------ oneOf disjointness

    def _exclusive_by_required(self, original: list, branches: list) -> list:
        """oneOf branches that only differ in the properties they require (``{"required": ["a"]}``
        | ``{"required": ["b"]}``), made exclusive: a branch whose required names include another
        branch's would always match both, so it is dropped; each remaining branch leaves out the
        names only the others require, so its output lacks a name every other branch needs.
        Other oneOf forms are returned as they are."""
        if not all(isinstance(b, dict) and set(known_keywords(b)) - ANNOTATIONS == {"required"} for b in original):
            return branches
        needs = [set(b["required"]) for b in original]
        keep = [i for i in range(len(needs)) if not any(j != i and needs[j] <= needs[i] for j in range(len(needs)))]
        if not keep:
            raise Unsatisfiable("every oneOf branch requires what another one does")
        out = []
        for i in keep:
            others = set().union(*(needs[j] for j in range(len(needs)) if j != i)) - needs[i]
            out.append({"allOf": [branches[i], {"properties": {n: False for n in sorted(others)}}]} if others else branches[i])
        return out

    def _one_of_disjoint(self, branches: list) -> bool:
        """Whether no value can match two branches (proved through types, consts and enums)."""
        try:
            flat = [self._flatten(b) for b in branches]
        except ValueError:
            return False
        return all(self._disjoint(flat[i], flat[j]) for i in range(len(flat)) for j in range(i + 1, len(flat)))

    def _values(self, schema) -> Optional[list]:
        if isinstance(schema, dict) and "const" in schema:
            return [schema["const"]]
        if isinstance(schema, dict) and "enum" in schema:
            return list(schema["enum"])
        return None

    def _disjoint(self, a, b) -> bool:
        """True only when no JSON value can validate against both (a sound, partial test)."""
        if a is False or b is False:
            return True
        if a is True or b is True:
            return False
        va, vb = self._values(a), self._values(b)
        if va is not None or vb is not None:
            values, other = (va, b) if va is not None else (vb, a)
            check = self.validator.evolve(schema=other)
            return not any(check.is_valid(v) for v in values)
        ta, tb = _type_set(a), _type_set(b)
        if ta is not None and tb is not None:
            ta2 = ta | ({"integer"} if "number" in ta else set())
            if not ta2 & tb and not ("number" in tb and "integer" in ta2):
                return True
        return self._disjoint_by_property(a, b)

    def _disjoint_by_property(self, a: dict, b: dict) -> bool:
        pa, pb = a.get("properties", {}), b.get("properties", {})
        required = set(a.get("required", [])) & set(b.get("required", []))
        for name in required & set(pa) & set(pb):
            if self._disjoint(self._flatten(pa[name]), self._flatten(pb[name])):
                return True
        return False

    # ------------------------------------------------------------ typed values

    def _typed(self, schema: dict) -> str:
        types = _type_set(schema) or self._infer_types(schema)
        if "number" in types:
            types.discard("integer")  # number's regex already covers integers
        parts = []
        for t in [t for t in _TYPES if t in types]:
            try:
                parts.append(self._type_regex(t, schema))
            except Unsatisfiable:
                continue
        if not parts:
            raise Unsatisfiable(f"no value of type {sorted(types)} satisfies the schema")
        return _alternation(parts)

    @staticmethod
    def _infer_types(schema: dict) -> set:
        """No "type": generate the types whose keywords appear (a valid subset), else any."""
        groups = [(_STRING_KW, "string"), (_NUMBER_KW, "number"), (_OBJECT_KW, "object"), (_ARRAY_KW, "array")]
        found = {t for kws, t in groups if kws & set(schema)}
        return found or set(_TYPES)

    def _type_regex(self, t: str, schema: dict) -> str:
        if t == "string":
            return self._string(schema)
        if t == "integer":
            return self._integer(schema)
        if t == "number":
            return self._number(schema)
        if t == "boolean":
            return "(?:true|false)"
        if t == "null":
            return "null"
        if t == "object":
            return self._object(schema)
        return self._array(schema)

    def _string(self, schema: dict) -> str:
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if fmt not in SUPPORTED_FORMATS:
            fmt = None  # outside the specification: an annotation validators ignore
        min_len, max_len = schema.get("minLength", 0), schema.get("maxLength")
        if fmt is not None and pattern is not None:
            raise ValueError("unsupported JSON schema keyword: pattern (together with format)")
        if fmt is None and max_len is not None and max_len > self.max_counted_chars:
            # every counted character is an automaton state (times the vocabulary in the token
            # index): long limits generate shorter strings (a valid subset; see COUNTED_CHAR_CAPS)
            max_len = max(min_len, self.max_counted_chars)
        if fmt is None and pattern is None:
            return string_length_regex(min_len, max_len, self.counted_escapes)
        if pattern is not None:
            if pattern_min_length(pattern) < min_len:
                raise ValueError(
                    f"unsupported JSON schema keyword: minLength (pattern {pattern!r} allows shorter strings)"
                )
            try:
                return '"' + pattern_content_regex(pattern, max_len) + '"'
            except ValueError as e:
                if max_len is None or "maxLength" not in str(e):
                    raise
                raise ValueError(f"unsupported JSON schema keyword: maxLength ({e})") from None
        lo, hi = format_length_bounds(fmt)
        if lo < min_len or (max_len is not None and hi > max_len):
            keyword = "minLength" if lo < min_len else "maxLength"
            raise ValueError(
                f"unsupported JSON schema keyword: {keyword} (with format {fmt!r}, whose values are "
                f"{lo} to {hi} characters long)"
            )
        return format_string_regex(fmt)

    def _integer_bounds(self, schema: dict) -> Tuple[Optional[int], Optional[int]]:
        lo, hi = None, None
        for key, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
            value = schema.get(key)
            if isinstance(value, bool):  # draft 4: a flag on "minimum"
                continue
            if value is not None:
                exclusive = exclusive or schema.get("exclusiveMinimum") is True
                cand = math.floor(value) + 1 if exclusive else math.ceil(value)
                lo = cand if lo is None else max(lo, cand)
        for key, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
            value = schema.get(key)
            if isinstance(value, bool):
                continue
            if value is not None:
                exclusive = exclusive or schema.get("exclusiveMaximum") is True
                cand = math.ceil(value) - 1 if exclusive else math.floor(value)
                hi = cand if hi is None else min(hi, cand)
        return lo, hi

    def _integer(self, schema: dict) -> str:
        lo, hi = self._integer_bounds(schema)
        if lo is None and hi is None:
            return _JSON_INTEGER
        if lo is not None and hi is not None and lo > hi:
            raise Unsatisfiable(f"no integer in [{lo}, {hi}]")
        return integer_range_regex(lo, hi)

    def _number_bounds(self, schema: dict) -> Tuple[Optional[Decimal], Optional[Decimal]]:
        lo, hi = None, None
        for key in ("minimum", "exclusiveMinimum"):
            value = schema.get(key)
            if value is None or isinstance(value, bool):
                continue
            exclusive = key == "exclusiveMinimum" or schema.get("exclusiveMinimum") is True
            cand = _decimal_of(_smallest_double_at_least(value, exclusive))
            lo = cand if lo is None else max(lo, cand)
        for key in ("maximum", "exclusiveMaximum"):
            value = schema.get(key)
            if value is None or isinstance(value, bool):
                continue
            exclusive = key == "exclusiveMaximum" or schema.get("exclusiveMaximum") is True
            cand = -_decimal_of(_smallest_double_at_least(-value, exclusive))
            hi = cand if hi is None else min(hi, cand)
        return lo, hi

    def _number(self, schema: dict) -> str:
        lo, hi = self._number_bounds(schema)
        if lo is None and hi is None:
            return JSON_NUMBER_CAPPED
        if lo is not None and hi is not None and lo > hi:
            raise Unsatisfiable(f"no number in [{lo}, {hi}]")
        return decimal_range_regex(lo, hi)


def json_schema_to_regex(
    schema: SchemaLike,
    whitespace_pattern: Optional[str] = None,
    max_recursion_depth: int = 3,
    any_value_depth: int = 1,
) -> str:
    """Regex for JSON documents valid against ``schema`` (dict, JSON text, pydantic class).

    ``whitespace_pattern`` goes between JSON tokens (default ``[ ]?``); it must only match
    JSON whitespace. ``"$$ANY$$"`` means any JSON value. ValueError names the problem:
    an invalid schema, an unsupported keyword, or a schema no generated value can satisfy.

    ``any_value_depth`` bounds the nesting of values the schema leaves free (``{}``, ``true``,
    arrays without ``items``...). Each level multiplies the automaton's states by about four
    and outlines-core scans the whole vocabulary once per state: at vocab 49K depth 1 compiles
    in ~1.3 s (~760 states), depth 2 in ~45 s (~3100 states).
    """
    loaded, validator_cls, whitespace_pattern = _prepare(schema, whitespace_pattern)
    for cap in COUNTED_CHAR_CAPS:
        regex = _deepest_regex(loaded, validator_cls, whitespace_pattern, max_recursion_depth, any_value_depth, cap)
        if counted_weight(regex) <= COUNTED_WEIGHT_BUDGET:
            break
    return regex


def _prepare(schema: SchemaLike, whitespace_pattern: Optional[str]):
    """(loaded schema, its validator class, the whitespace pattern) with the arguments checked."""
    if schema == ANY_JSON:
        schema = {}
    loaded = _load_schema(schema)
    validator_cls = _check_schema(loaded)
    if whitespace_pattern is None:
        whitespace_pattern = DEFAULT_WHITESPACE_PATTERN
    elif whitespace_pattern:
        _validate_whitespace(whitespace_pattern)
    return loaded, validator_cls, whitespace_pattern


def _deepest_regex(loaded, validator_cls, whitespace_pattern: str, max_recursion_depth: int,
                   any_value_depth: int, max_counted_chars: int) -> str:
    """The regex at the deepest recursion level that fits MAX_REGEX_CHARS."""
    # Recursion ($ref cycles) multiplies the regex at every level: go deeper only while the
    # regex stays within MAX_REGEX_CHARS (predicted from the growth of the level before).
    regex, sizes = None, []
    for depth in range(1, max(max_recursion_depth, 1) + 1):
        if len(sizes) >= 2 and sizes[-1] * sizes[-1] / max(sizes[-2], 1) > MAX_REGEX_CHARS:
            break
        compiler = _Compiler(loaded, validator_cls, whitespace_pattern, depth, any_value_depth, max_counted_chars)
        try:
            candidate = compiler.node(loaded)
        except Unsatisfiable as e:
            if regex is not None:
                break
            if depth < max_recursion_depth:
                continue  # a required recursion may need more levels
            raise ValueError(f"JSON schema cannot be satisfied by generated output: {e}") from None
        except RecursionError:
            raise ValueError("JSON schema is nested too deeply") from None
        if len(candidate) > MAX_REGEX_CHARS:
            if regex is not None:
                break
            raise ValueError(
                f"JSON schema is too large to compile: its automaton's regex has {len(candidate):,} "
                f"characters (limit {MAX_REGEX_CHARS:,}); split it or drop optional parts"
            )
        if sizes and len(candidate) == sizes[-1]:
            break  # no recursion: deeper levels give the same regex
        regex = candidate
        sizes.append(len(candidate))
    return regex


def build_regex_from_object(schema: SchemaLike, whitespace_pattern: Optional[str] = None) -> str:
    """SGLang's public name for :func:`json_schema_to_regex` (dict, JSON text or pydantic class)."""
    return json_schema_to_regex(schema, whitespace_pattern)
