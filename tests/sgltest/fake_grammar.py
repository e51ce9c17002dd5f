"""Tiny samplers used by the fake engine: a string matching a regex, a JSON value for a schema.

They stand in for constrained decoding in tests; every regex sample is checked with
`re.fullmatch` before it is returned.
"""

from __future__ import annotations

import json
import random
import re
import string
from typing import Any, Dict, List

try:  # Python >= 3.11 keeps the parser here; older versions expose sre_parse.
    from re import _constants as _c
    from re import _parser as _sre
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore
    import sre_parse as _sre  # type: ignore

_PRINTABLE = string.ascii_letters + string.digits + " .,-_:;!?"
_CATEGORY_CHARS = {
    _c.CATEGORY_DIGIT: string.digits,
    _c.CATEGORY_NOT_DIGIT: string.ascii_letters,
    _c.CATEGORY_SPACE: " ",
    _c.CATEGORY_NOT_SPACE: string.ascii_letters,
    _c.CATEGORY_WORD: string.ascii_lowercase,
    _c.CATEGORY_NOT_WORD: " .,",
}


def sample_regex(pattern: str, rng: random.Random, tries: int = 50) -> str:
    """A string that fully matches `pattern` (ValueError if none is found)."""
    parsed = _sre.parse(pattern)
    compiled = re.compile(pattern)
    for attempt in range(tries):
        # First try "natural" samples (optional parts left out: no "+" signs, no ".5" floats),
        # then fully random ones for patterns that need the optional parts.
        text = _emit(parsed, _Chooser(rng, natural=attempt < tries // 2), {})
        if compiled.fullmatch(text):
            return text
    raise ValueError(f"regex {pattern!r}: could not sample a matching string")


def _emit(items: Any, rng: random.Random, groups: Dict[int, str]) -> str:
    return "".join(_emit_one(op, av, rng, groups) for op, av in items)


def _emit_one(op: Any, av: Any, rng: random.Random, groups: Dict[int, str]) -> str:
    if op is _c.LITERAL:
        return chr(av)
    if op is _c.NOT_LITERAL:
        return rng.choice([ch for ch in _PRINTABLE if ch != chr(av)])
    if op is _c.ANY:
        return rng.choice(string.ascii_lowercase)
    if op is _c.IN:
        return _emit_in(av, rng)
    if op is _c.BRANCH:
        return _emit(rng.choice(av[1]), rng, groups)
    if op is _c.SUBPATTERN:
        text = _emit(av[-1], rng, groups)
        if av[0] is not None:
            groups[av[0]] = text
        return text
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) or op is getattr(_c, "POSSESSIVE_REPEAT", None):
        low, high, item = av
        return "".join(_emit(item, rng, groups) for _ in range(rng.repeat_count(low, high)))
    if op is _c.GROUPREF:
        return groups.get(av, "")
    if op is getattr(_c, "ATOMIC_GROUP", None):
        return _emit(av, rng, groups)
    return ""  # anchors and lookarounds add no text; fullmatch rejects bad samples


class _Chooser:
    """random.Random plus the repeat-count policy of one sampling attempt."""

    def __init__(self, rng: random.Random, natural: bool) -> None:
        self.rng = rng
        self.natural = natural

    def choice(self, seq: Any) -> Any:
        return self.rng.choice(seq)

    def repeat_count(self, low: int, high: int) -> int:
        if self.natural:
            if low == 0 and high == 1:
                return 0
            return self.rng.randint(max(low, 1), max(low, min(high, 3)))
        return self.rng.randint(low, min(high, low + 3))


def _emit_in(items: List[Any], rng: random.Random) -> str:
    negate = bool(items) and items[0][0] is _c.NEGATE
    pool = _class_chars(items[1:] if negate else items)
    if negate:
        pool = "".join(ch for ch in _PRINTABLE if ch not in pool)
    if getattr(rng, "natural", False):
        pool = pool.replace("0", "") or pool  # no leading zeros ("05" is not a JSON number)
    return rng.choice(pool) if pool else ""


def _class_chars(items: List[Any]) -> str:
    chars = []
    for op, av in items:
        if op is _c.LITERAL:
            chars.append(chr(av))
        elif op is _c.RANGE:
            chars.extend(chr(code) for code in range(av[0], min(av[1], av[0] + 64) + 1))
        elif op is _c.CATEGORY:
            chars.append(_CATEGORY_CHARS.get(av, ""))
    return "".join(chars)


def sample_json(schema: Any, rng: random.Random) -> str:
    """A JSON document for a (simple) JSON schema: objects, arrays, scalars, enum, const."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    return json.dumps(_json_value(schema, rng))


def _json_value(schema: Dict[str, Any], rng: random.Random) -> Any:
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _json_value(sub, rng) for key, sub in props.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [_json_value(schema.get("items", {"type": "string"}), rng) for _ in range(count)]
    return _json_scalar(kind, schema, rng)


def _json_scalar(kind: str, schema: Dict[str, Any], rng: random.Random) -> Any:
    if kind == "string":
        if "pattern" in schema:
            return sample_regex(schema["pattern"], rng)
        return rng.choice(["alpha", "bravo", "charlie"])
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(schema.get("minimum", 0), schema.get("maximum", 100)), 2)
    if kind == "boolean":
        return rng.choice([True, False])
    return None
