"""Object, array and "any JSON value" regexes for the JSON-schema compiler.

Kept apart from ``json_schema.py`` so each file stays small; ``ContainerRegexMixin`` expects the
host class to provide ``node(schema) -> str``, ``ws`` (whitespace regex) and ``any_depth``.
"""

import json
import re
from typing import Dict, List, Optional, Tuple

from .pattern_regex import pattern_content_regex
from .schema_merge import Unsatisfiable, pattern_matches
from .string_regex import JSON_STRING, escape_literal

__all__ = ["ContainerRegexMixin", "JSON_NUMBER_REGEX", "JSON_NUMBER_CAPPED"]

JSON_NUMBER_REGEX = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
# A schema's "number" caps its digit runs (16 integer and fraction digits, a 3-digit exponent:
# more than a double holds) so sampling cannot run away in a number. Free-form JSON keeps the
# unbounded form: counted repeats multiply its automaton's states.
JSON_NUMBER_CAPPED = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?"


# Arrays with a larger maxItems are generated with at most this many items (or minItems).
MAX_COUNTED_ITEMS = 32
# A bounded array's items may hold about this many counted repeats in all (counted_weight).
COUNTED_ITEMS_BUDGET = 1024
_COUNT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def counted_weight(regex: str) -> int:
    """Sum of the upper bounds of the counted repeats ``{m,n}`` written in ``regex``: a rough
    measure of how many automaton states its counting costs."""
    return sum(int(hi or lo) for lo, hi in _COUNT.findall(regex))


# All-optional objects whose fields' regexes are longer than this are generated starting with
# their first declared field (see _fields_regex).
FLEXIBLE_OBJECT_CHARS = 4096


def _repeat(body: str, lo: int, hi: Optional[int]) -> str:
    """``body`` repeated lo..hi times (hi None = unbounded)."""
    if hi == 0:
        return ""
    group = "(?:" + body + ")"
    if hi is None:
        return group + ("*" if lo == 0 else "{%d,}" % lo)
    if lo == hi:
        return group if lo == 1 else group + "{%d}" % lo
    return group + ("?" if (lo, hi) == (0, 1) else "{%d,%d}" % (lo, hi))


class ContainerRegexMixin:
    ws: str
    any_depth: int

    def node(self, schema) -> str:  # provided by the host class
        raise NotImplementedError

    # ------------------------------------------------------------ helpers

    @property
    def _sep(self) -> str:
        return self.ws + "," + self.ws

    def _wrap(self, open_: str, body: Optional[str], nullable: bool, close: str) -> str:
        """``{ body }`` / ``[ body ]`` with whitespace; body None means always empty."""
        if body is None:
            return open_ + self.ws + close
        inner = f"(?:{body}{self.ws})?" if nullable else body + self.ws
        return open_ + self.ws + inner + close

    # ------------------------------------------------------------ any value

    def any_value(self, depth: int) -> str:
        cache: Dict[int, str] = self.__dict__.setdefault("_any_cache", {})
        if depth not in cache:
            parts = [JSON_STRING, JSON_NUMBER_REGEX, "true", "false", "null"]
            if depth > 0:
                inner = self.any_value(depth - 1)
                parts.append(self._list_of(inner, 0, None))
                parts.append(self._map_of(inner, 0, None))
            cache[depth] = "(?:" + "|".join(parts) + ")"
        return cache[depth]

    def _list_of(self, item: str, lo: int, hi: Optional[int]) -> str:
        if hi == 0:
            return self._wrap(r"\[", None, True, r"\]")
        body = item + _repeat(self._sep + item, max(lo - 1, 0), None if hi is None else hi - 1)
        return self._wrap(r"\[", body, lo == 0, r"\]")

    def _map_of(self, value: str, lo: int, hi: Optional[int], key: str = JSON_STRING) -> str:
        """Objects with arbitrary string keys (matching ``key``); duplicate keys only lower the
        count, so a maximum holds, and lo is at most 1 (checked by the caller)."""
        if hi == 0:
            return self._wrap(r"\{", None, True, r"\}")
        pair = key + self.ws + ":" + self.ws + value
        body = pair + _repeat(self._sep + pair, 0, None if hi is None else hi - 1)
        return self._wrap(r"\{", body, lo == 0, r"\}")

    # ------------------------------------------------------------ objects

    def _object(self, schema: dict) -> str:
        props: dict = schema.get("properties", {})
        required: List[str] = list(schema.get("required", []))
        # Every key we emit is declared, matches a pattern or is one additionalProperties
        # governs, so unevaluatedProperties only applies where additionalProperties is absent.
        extra = schema.get("additionalProperties", schema.get("unevaluatedProperties", True))
        patterns: dict = schema.get("patternProperties", {})
        names = schema.get("propertyNames")
        min_props, max_props = schema.get("minProperties", 0), schema.get("maxProperties")
        if not props and not required:
            return self._free_object(extra, patterns, names, min_props, max_props)
        props = self._named_schemas(props, required, patterns, extra, names)
        fields = self._object_fields(props, required, extra)
        fields = self._limit_fields(fields, min_props, max_props)
        return self._fields_regex(fields)

    def _free_object(self, extra, patterns: dict, names, min_props: int, max_props: Optional[int]) -> str:
        if min_props > 1:
            raise ValueError("unsupported JSON schema keyword: minProperties (above 1 without properties)")
        if patterns:
            return self._pattern_object(patterns, names, min_props, max_props)
        if extra is False:
            if min_props:
                raise Unsatisfiable("minProperties with additionalProperties false and no properties")
            return self._wrap(r"\{", None, True, r"\}")
        value = self.any_value(self.any_depth) if extra is True else self.node(extra)
        key = JSON_STRING if names is None else self.node({"allOf": [{"type": "string"}, names]})
        return self._map_of(value, min_props, max_props, key)

    def _pattern_object(self, patterns: dict, names, min_props: int, max_props: Optional[int]) -> str:
        """Keys drawn from the patterns (so additionalProperties never applies), each value valid
        under every pattern's schema (a key may match several)."""
        if names is not None:
            raise ValueError("unsupported JSON schema keyword: propertyNames (next to patternProperties)")
        try:
            value = self.node({"allOf": list(patterns.values())})
        except Unsatisfiable:
            if min_props:
                raise
            return self._wrap(r"\{", None, True, r"\}")
        keys = ['"' + pattern_content_regex(p, None) + '"' for p in patterns]
        return self._map_of(value, min_props, max_props, "(?:" + "|".join(keys) + ")")

    def _named_schemas(self, props: dict, required: List[str], patterns: dict, extra, names) -> dict:
        """Schema of every declared or required name: its own, allOf the patterns it matches
        (additionalProperties only for names neither declares); False (left out) for an
        optional name that propertyNames rejects."""
        out = {}
        check = self.validator.evolve(schema=names) if names is not None else None
        for name in list(props) + [r for r in required if r not in props]:
            if check is not None and not check.is_valid(name):
                if name in required:
                    raise Unsatisfiable(f"required property {name!r} is rejected by propertyNames")
                out[name] = False
                continue
            matched = [sub for pat, sub in patterns.items() if pattern_matches(pat, name)]
            own = [props[name]] if name in props else ([] if matched else [extra])
            parts = own + matched
            out[name] = parts[0] if len(parts) == 1 else {"allOf": parts}
        return out

    def _object_fields(self, props: dict, required: List[str], extra) -> List[Tuple[str, str, bool]]:
        """(key, value regex, required) in declaration order; undeclared required keys last."""
        fields = []
        for name, sub in props.items():
            is_required = name in required
            try:
                value = self.node(sub)
            except Unsatisfiable:
                if is_required:
                    raise
                continue  # an optional property we cannot fill is simply left out
            key = escape_literal(json.dumps(name, ensure_ascii=False))
            fields.append((key, value, is_required))
        return fields

    @staticmethod
    def _limit_fields(fields, min_props: int, max_props: Optional[int]):
        n_required = sum(1 for f in fields if f[2])
        if min_props > n_required:
            raise ValueError(
                "unsupported JSON schema keyword: minProperties (more than the required properties)"
            )
        if max_props is None or max_props >= len(fields):
            return fields
        if max_props < n_required:
            raise Unsatisfiable("maxProperties is below the number of required properties")
        # keep every required field and the first optional ones that fit
        budget, kept = max_props - n_required, []
        for field in fields:
            if field[2] or budget > 0:
                budget -= 0 if field[2] else 1
                kept.append(field)
        return kept

    def _fields_regex(self, fields: List[Tuple[str, str, bool]]) -> str:
        """Present fields in declaration order, commas only between them, each field's value
        written at most twice so nested objects do not grow the regex exponentially.

        With a required field r: the optional fields before it each carry their comma after
        them, those after it before them (one copy each). With none: ``any[k]`` (a non-empty
        run among fields 0..k) is ``any[k-1] (, f_k)? | f_k``, and the object may be empty; past
        FLEXIBLE_OBJECT_CHARS of fields, a non-empty object starts with its first field instead
        (each copy doubles every object nested inside).
        """
        if not fields:
            return self._wrap(r"\{", None, True, r"\}")
        pairs = [f"{key}{self.ws}:{self.ws}{value}" for key, value, _ in fields]
        first_req = next((k for k, f in enumerate(fields) if f[2]), None)
        if first_req is None and sum(map(len, pairs)) > FLEXIBLE_OBJECT_CHARS:
            # large (nested) optional fields: a non-empty object starts with the first declared
            # field, so no value is written twice (a valid subset of the objects)
            body = pairs[0] + "".join(f"(?:{self._sep}{pair})?" for pair in pairs[1:])
            return self._wrap(r"\{", body, True, r"\}")
        if first_req is None:
            body = pairs[0]
            for pair in pairs[1:]:
                body = f"(?:{body}(?:{self._sep}{pair})?|{pair})"
            return self._wrap(r"\{", body, True, r"\}")
        before = "".join(f"(?:{pair}{self._sep})?" for pair in pairs[:first_req])
        after = "".join(
            self._sep + pair if fields[k][2] else f"(?:{self._sep}{pair})?"
            for k, pair in enumerate(pairs) if k > first_req
        )
        return self._wrap(r"\{", before + pairs[first_req] + after, False, r"\}")

    # ------------------------------------------------------------ arrays

    def _array(self, schema: dict) -> str:
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if hi is not None and hi > MAX_COUNTED_ITEMS:
            hi = max(lo, MAX_COUNTED_ITEMS)  # a valid subset: counted items cost automaton states
        if schema.get("uniqueItems") is True and (hi is None or hi > 1):
            if lo > 1:
                raise ValueError("unsupported JSON schema keyword: uniqueItems (with minItems above 1)")
            hi = 1  # a subset that is always unique: arrays of at most one item
        prefix, rest = self._array_layout(schema)
        prefix_rx = self._prefix_regexes(prefix, lo)
        if len(prefix_rx) < len(prefix):
            rest = False  # items after an impossible position cannot exist either
        rest_rx = self._optional_node(rest)
        if rest_rx is None:
            hi = len(prefix_rx) if hi is None else min(hi, len(prefix_rx))
        if hi is not None and rest_rx is not None and hi > max(lo, 1):
            # each counted item repeats the item's automaton; items holding long counted strings
            # would multiply into millions of states: fewer items (a valid subset)
            weight = counted_weight(rest_rx)
            if weight * hi > COUNTED_ITEMS_BUDGET:
                hi = max(lo, 1, COUNTED_ITEMS_BUDGET // max(weight, 1))
        if hi is not None and lo > hi:
            raise Unsatisfiable(f"array needs {lo} items but at most {hi} can be generated")
        body = self._items_body(prefix_rx, rest_rx, lo, hi)
        return self._wrap(r"\[", body, lo == 0, r"\]")

    @staticmethod
    def _array_layout(schema: dict):
        """(positional schemas, schema for the remaining items) for 2020-12 and older drafts."""
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 2019 and older: items is the tuple layout
            return items, schema.get("additionalItems", True)
        return schema.get("prefixItems", []), items

    def _prefix_regexes(self, prefix: list, lo: int) -> List[str]:
        out = []
        for i, sub in enumerate(prefix):
            try:
                out.append(self.node(sub))
            except Unsatisfiable:
                if i < lo:
                    raise
                break  # the array simply ends before this position
        return out

    def _optional_node(self, schema) -> Optional[str]:
        if schema is False:
            return None
        try:
            return self.node(schema)
        except Unsatisfiable:
            return None

    def _items_body(self, prefix: List[str], rest: Optional[str], lo: int, hi: Optional[int]) -> Optional[str]:
        if hi == 0:
            return None
        if not prefix:
            return rest + _repeat(self._sep + rest, max(lo - 1, 0), None if hi is None else hi - 1)
        return prefix[0] + self._items_tail(prefix, rest, 1, lo, hi)

    def _items_tail(self, prefix: List[str], rest: Optional[str], i: int, lo: int, hi: Optional[int]) -> str:
        """Items at positions i.. (each after a comma), given i items already written."""
        if hi is not None and i >= hi:
            return ""
        if i < len(prefix):
            item = self._sep + prefix[i] + self._items_tail(prefix, rest, i + 1, lo, hi)
            return item if i < lo else f"(?:{item})?"
        if rest is None:
            return ""
        return _repeat(self._sep + rest, max(lo - i, 0), None if hi is None else hi - i)

