"""Object, array and "any JSON value" regexes for the JSON-schema compiler.

Kept apart from ``json_schema.py`` so each file stays small; ``ContainerRegexMixin`` expects the
host class to provide ``node(schema) -> str``, ``ws`` (whitespace regex) and ``any_depth``.
"""

import json
from typing import Dict, List, Optional, Tuple

from .schema_merge import Unsatisfiable
from .string_regex import JSON_STRING, escape_literal

__all__ = ["ContainerRegexMixin", "JSON_NUMBER_REGEX", "JSON_NUMBER_CAPPED"]

JSON_NUMBER_REGEX = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
# A schema's "number" caps its digit runs (16 integer and fraction digits, a 3-digit exponent:
# more than a double holds) so sampling cannot run away in a number. Free-form JSON keeps the
# unbounded form: counted repeats multiply its automaton's states.
JSON_NUMBER_CAPPED = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?"


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

    def _map_of(self, value: str, lo: int, hi: Optional[int]) -> str:
        """Objects with arbitrary string keys; duplicate keys only lower the count, so a maximum
        holds, and lo is at most 1 (checked by the caller)."""
        if hi == 0:
            return self._wrap(r"\{", None, True, r"\}")
        pair = JSON_STRING + self.ws + ":" + self.ws + value
        body = pair + _repeat(self._sep + pair, 0, None if hi is None else hi - 1)
        return self._wrap(r"\{", body, lo == 0, r"\}")

    # ------------------------------------------------------------ objects

    def _object(self, schema: dict) -> str:
        props: dict = schema.get("properties", {})
        required: List[str] = list(schema.get("required", []))
        extra = schema.get("additionalProperties", True)
        min_props, max_props = schema.get("minProperties", 0), schema.get("maxProperties")
        if not props and not required:
            return self._free_object(extra, min_props, max_props)
        fields = self._object_fields(props, required, extra)
        fields = self._limit_fields(fields, min_props, max_props)
        return self._fields_regex(fields)

    def _free_object(self, extra, min_props: int, max_props: Optional[int]) -> str:
        if min_props > 1:
            raise ValueError("unsupported JSON schema keyword: minProperties (above 1 without properties)")
        if extra is False:
            if min_props:
                raise Unsatisfiable("minProperties with additionalProperties false and no properties")
            return self._wrap(r"\{", None, True, r"\}")
        value = self.any_value(self.any_depth) if extra is True else self.node(extra)
        return self._map_of(value, min_props, max_props)

    def _object_fields(self, props: dict, required: List[str], extra) -> List[Tuple[str, str, bool]]:
        """(key, value regex, required) in declaration order; undeclared required keys last."""
        schemas = dict(props)
        for name in required:
            if name not in schemas:
                if extra is False:
                    raise Unsatisfiable(f"required property {name!r} is forbidden by additionalProperties")
                schemas[name] = extra
        fields = []
        for name, sub in schemas.items():
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
        """Present fields in order, commas only between them: build suffixes right to left.

        after[k]: fields k.. when something was already written (each is ", field").
        first[k]: fields k.. when nothing was written yet and at least one is written.
        """
        n = len(fields)
        pairs = [f"{key}{self.ws}:{self.ws}{value}" for key, value, _ in fields]
        after = [""] * (n + 1)
        first: List[Optional[str]] = [None] * (n + 1)
        for k in range(n - 1, -1, -1):
            req = fields[k][2]
            item = self._sep + pairs[k]
            after[k] = (item if req else f"(?:{item})?") + after[k + 1]
            head = pairs[k] + after[k + 1]
            if req or first[k + 1] is None:
                first[k] = head
            else:
                first[k] = f"(?:{head}|{first[k + 1]})"
        nullable = not any(f[2] for f in fields)
        return self._wrap(r"\{", first[0], nullable, r"\}")

    # ------------------------------------------------------------ arrays

    def _array(self, schema: dict) -> str:
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if schema.get("uniqueItems") is True and (hi is None or hi > 1):
            raise ValueError("unsupported JSON schema keyword: uniqueItems")
        prefix, rest = self._array_layout(schema)
        prefix_rx = self._prefix_regexes(prefix, lo)
        if len(prefix_rx) < len(prefix):
            rest = False  # items after an impossible position cannot exist either
        rest_rx = self._optional_node(rest)
        if rest_rx is None:
            hi = len(prefix_rx) if hi is None else min(hi, len(prefix_rx))
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
