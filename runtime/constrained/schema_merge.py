"""``allOf`` support: merge subschemas into one when that is provably equivalent.

A merged schema must accept exactly what every subschema accepts, for the values our generator
emits. Bounds combine by max/min, ``required`` by union, ``type`` and ``enum`` by intersection,
same-named properties by a nested ``allOf``. Anything else (two different ``pattern``s, an
``additionalProperties`` limit next to another subschema's properties, two ``items`` lists...)
raises ValueError naming ``allOf`` and the keyword, instead of guessing.
"""

import json
import re
from typing import Any, Dict, List

from .schema_vocab import ANNOTATIONS, known_keywords

__all__ = ["merge_all_of", "Unsatisfiable"]

_MAX_OF = {"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"}
_MIN_OF = {"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"}
_ARRAY_SHAPE = {"items", "prefixItems", "additionalItems"}


class Unsatisfiable(ValueError):
    """No value can satisfy the schema (e.g. disjoint types in allOf)."""


def _types(value) -> set:
    return {value} if isinstance(value, str) else set(value)


def _merge_types(a, b) -> List[str]:
    ta, tb = _types(a), _types(b)
    both = ta & tb
    # integer is a subtype of number
    if "number" in ta and "integer" in tb or "number" in tb and "integer" in ta:
        both.add("integer")
    if not both:
        raise Unsatisfiable(f"allOf requires disjoint types {sorted(ta)} and {sorted(tb)}")
    return sorted(both)


def _value_key(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


def _merge_enum(a: list, b: list) -> list:
    keys = {_value_key(v) for v in b}
    both = [v for v in a if _value_key(v) in keys]
    if not both:
        raise Unsatisfiable("allOf combines enums with no common value")
    return both


def _merge_properties(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for name, sub in b.items():
        out[name] = {"allOf": [out[name], sub]} if name in out else sub
    return out


def _hidden_names(closed: dict, other: dict) -> Dict[str, Any]:
    """Names ``other`` declares or requires that ``closed``'s ``additionalProperties`` governs:
    name -> that schema (False when additional properties are forbidden)."""
    extra = closed.get("additionalProperties", True)
    if extra is True:
        return {}
    own = set(closed.get("properties", {}))
    patterns = list(closed.get("patternProperties", {}))
    foreign = [n for n in list(other.get("properties", {})) + list(other.get("required", [])) if n not in own]
    return {n: extra for n in foreign if not any(pattern_matches(p, n) for p in patterns)}


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether a patternProperties pattern matches a property name (unanchored, as in ECMA-262);
    ValueError naming the keyword for a pattern Python cannot compile."""
    try:
        return re.search(pattern, name) is not None
    except re.error as e:
        raise ValueError(f"unsupported JSON schema keyword: patternProperties (pattern {pattern!r}: {e})") from None


def _restrict_hidden(out: dict, hidden: Dict[str, Any]) -> None:
    """Apply another subschema's additionalProperties to the names it does not declare: forbidden
    optional names are left out (a valid subset), forbidden required ones make allOf unsatisfiable."""
    props = dict(out.get("properties", {}))
    for name, extra in hidden.items():
        if extra is False:
            if name in out.get("required", []):
                raise Unsatisfiable(f"required property {name!r} is rejected by another allOf subschema's additionalProperties")
            props[name] = False
        else:
            props[name] = {"allOf": [props[name], extra]} if name in props else extra
    out["properties"] = props


def _merge_value(key: str, a: Any, b: Any) -> Any:
    if a == b or key in ANNOTATIONS:
        return a
    if key == "type":
        return _merge_types(a, b)
    if key == "required":
        return list(dict.fromkeys(list(a) + list(b)))
    if key in ("properties", "patternProperties"):
        return _merge_properties(a, b)
    if key == "enum":
        return _merge_enum(a, b)
    if key == "const":
        raise Unsatisfiable("allOf combines two different const values")
    both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if key in _MAX_OF and both_numbers:
        return max(a, b)
    if key in _MIN_OF and both_numbers:
        return min(a, b)
    if key == "items" and isinstance(a, dict) and isinstance(b, dict):
        return {"allOf": [a, b]}
    if key == "additionalProperties":
        # each side governs the names it does not declare (see _hidden_names); on names that
        # neither declares both apply
        if a is False or b is False:
            return False
        return b if a is True else a if b is True else {"allOf": [a, b]}
    raise ValueError(f"unsupported JSON schema keyword: allOf (cannot combine two different '{key}')")


def _tuple_layout(schema: dict) -> bool:
    return "prefixItems" in schema or "additionalItems" in schema or isinstance(schema.get("items"), list)


def _merge_pair(a: dict, b: dict) -> dict:
    hidden = {**_hidden_names(a, b), **_hidden_names(b, a)}
    if (_tuple_layout(a) or _tuple_layout(b)) and _ARRAY_SHAPE & set(a) and _ARRAY_SHAPE & set(b) \
            and any(a.get(k) != b.get(k) for k in _ARRAY_SHAPE):
        raise ValueError("unsupported JSON schema keyword: allOf (two different array item layouts)")
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge_value(key, out[key], value) if key in out else value
    if hidden:
        _restrict_hidden(out, hidden)
    return out


def merge_all_of(schemas: List[Any]) -> Any:
    """Merge dict subschemas (``$ref``s already resolved by the caller); booleans fold in."""
    merged: Any = True
    for sub in schemas:
        if sub is False:
            raise Unsatisfiable("allOf contains the schema 'false'")
        if sub is True:
            continue
        sub = known_keywords(sub) if isinstance(sub, dict) else sub
        merged = dict(sub) if merged is True else _merge_pair(merged, sub)
    return merged
