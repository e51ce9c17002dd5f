"""Turn a JSON-schema ``pattern`` into a regex over the *JSON text* of the string.

The pattern describes the decoded string; the model writes the encoded one, where ``"``, ``\\``
and control characters must be escaped. Pasting the pattern between quotes (what outlines-core
0.2.14 does) lets ``.*`` emit a raw ``"`` and break the JSON. We parse the pattern with Python's
own regex parser (the ``jsonschema`` validator uses Python ``re`` too) and re-emit it:

* literals are written in their JSON-escaped form (``"`` -> ``\\"``);
* character classes keep their safe members raw and add the escape sequence for ``"``/``\\``;
* ``.``, negated classes and ``\\D``/``\\W``/``\\S`` are limited to printable ASCII, where
  Python's Unicode classes and ours agree exactly (a subset of what the pattern allows: every
  generated string still matches);
* ``^`` / ``$`` are accepted at the ends only (the whole string is generated anyway);
* look-around, back-references, word boundaries, possessive/atomic groups and inline flags other
  than ``s``/``x`` raise ValueError: they cannot be turned into an automaton faithfully.
"""

import math
import re
from typing import List, Optional, Tuple

try:  # Python >= 3.11
    import re._constants as sre_c
    import re._parser as sre_parse
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as sre_c  # type: ignore
    import sre_parse  # type: ignore

from .string_regex import escape_literal

__all__ = ["pattern_content_regex", "pattern_min_length"]

Ranges = List[Tuple[int, int]]

_PRINTABLE_ASCII: Ranges = [(0x20, 0x7E)]
_CATEGORY_ASCII = {
    sre_c.CATEGORY_DIGIT: [(0x30, 0x39)],
    sre_c.CATEGORY_WORD: [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    sre_c.CATEGORY_SPACE: [(0x20, 0x20)],
}
_NEGATED_CATEGORY = {
    sre_c.CATEGORY_NOT_DIGIT: sre_c.CATEGORY_DIGIT,
    sre_c.CATEGORY_NOT_WORD: sre_c.CATEGORY_WORD,
    sre_c.CATEGORY_NOT_SPACE: sre_c.CATEGORY_SPACE,
}
# Characters written raw inside a JSON string by the model: no controls, no C1 controls,
# no surrogates (not encodable in UTF-8); quote and backslash get escape sequences instead.
_UNSAFE: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x9F), (0xD800, 0xDFFF)]
_JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_CLASS_SPECIAL = set("\\]-[^&~")
_ALLOWED_FLAGS = sre_c.SRE_FLAG_UNICODE | sre_c.SRE_FLAG_DOTALL | sre_c.SRE_FLAG_VERBOSE


# ---------------------------------------------------------------- range-set algebra


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subtract(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in _normalize(a):
        for blo, bhi in _normalize(b):
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = max(lo, bhi + 1)
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    return _subtract(a, _subtract(a, b))


def _contains(ranges: Ranges, code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


# ---------------------------------------------------------------- emission


def _json_escape_regex(code: int) -> str:
    """Regex for the JSON escape sequence of a character that cannot appear raw."""
    text = _JSON_ESCAPES.get(code, "\\u%04x" % code)
    return escape_literal(text)


def _class_char(code: int) -> str:
    ch = chr(code)
    return "\\" + ch if ch in _CLASS_SPECIAL else ch


def _emit_set(members: Ranges) -> str:
    """Regex for one decoded character drawn from ``members`` (JSON-escaped where needed)."""
    members = _normalize(members)
    raw = _subtract(members, _UNSAFE)
    parts = []
    if raw:
        if len(raw) == 1 and raw[0][0] == raw[0][1]:
            parts.append(escape_literal(chr(raw[0][0])))
        else:
            body = "".join(
                _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in raw
            )
            parts.append(f"[{body}]")
    for lo, hi in _intersect(members, _UNSAFE):
        if lo >= 0xD800 or (lo >= 0x7F and hi <= 0x9F):
            continue  # surrogates and C1 controls are never generated
        for code in range(lo, min(hi, 0x7E) + 1):
            parts.append(_json_escape_regex(code))
    if not parts:
        raise ValueError("pattern has a character class with no character a JSON string can hold")
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _class_members(items) -> Ranges:
    """Code-point ranges of an IN node (a character class)."""
    negate = bool(items) and items[0][0] == sre_c.NEGATE
    ranges: Ranges = []
    for op, av in items[1:] if negate else items:
        if op == sre_c.LITERAL:
            ranges.append((av, av))
        elif op == sre_c.RANGE:
            ranges.append(av)
        elif op == sre_c.CATEGORY:
            ranges.extend(_category(av))
        else:
            raise ValueError(f"unsupported construct in pattern character class: {op}")
    if negate:
        return _subtract(_PRINTABLE_ASCII, ranges)
    return ranges


def _category(cat) -> Ranges:
    if cat in _CATEGORY_ASCII:
        return _CATEGORY_ASCII[cat]
    if cat in _NEGATED_CATEGORY:
        return _subtract(_PRINTABLE_ASCII, _CATEGORY_ASCII[_NEGATED_CATEGORY[cat]])
    raise ValueError(f"unsupported character category in pattern: {cat}")


def _repeat(body: str, lo: int, hi: int) -> str:
    group = "(?:" + body + ")"
    if hi == sre_c.MAXREPEAT:
        return group + ("*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo)
    if lo == hi:
        return group + "{%d}" % lo
    return group + ("?" if (lo, hi) == (0, 1) else "{%d,%d}" % (lo, hi))


def _capped(lo: int, hi: int, cap: Optional[int]) -> int:
    """Upper repeat count once unbounded repeats are limited to ``cap`` (never below lo)."""
    return max(lo, cap) if hi == sre_c.MAXREPEAT and cap is not None else hi


def _emit_node(op, av, cap: Optional[int]) -> str:
    if op == sre_c.LITERAL:
        return _emit_set([(av, av)])
    if op == sre_c.NOT_LITERAL:
        return _emit_set(_subtract(_PRINTABLE_ASCII, [(av, av)]))
    if op == sre_c.ANY:
        return _emit_set(_PRINTABLE_ASCII)
    if op == sre_c.IN:
        return _emit_set(_class_members(av))
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        lo, hi, sub = av
        return _repeat(_emit_seq(sub, cap), lo, _capped(lo, hi, cap))
    if op == sre_c.BRANCH:
        return "(?:" + "|".join(_emit_seq(alt, cap) for alt in av[1]) + ")"
    if op == sre_c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags & ~_ALLOWED_FLAGS or del_flags:
            raise ValueError("pattern uses inline flags that constrained decoding cannot enforce")
        return "(?:" + _emit_seq(sub, cap) + ")"
    if op == sre_c.AT:
        raise ValueError(f"pattern uses an anchor or boundary ({av}) away from its ends")
    raise ValueError(
        f"pattern uses {op} (look-around, back-references, possessive or atomic groups), "
        "which constrained decoding cannot enforce"
    )


def _emit_seq(seq, cap: Optional[int]) -> str:
    return "".join(_emit_node(op, av, cap) for op, av in seq)


def _max_width(seq, cap: Optional[int]) -> float:
    """Longest decoded string of ``seq`` with unbounded repeats capped (inf if uncapped)."""
    total = 0.0
    for op, av in seq:
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            hi = _capped(av[0], av[1], cap)
            total += (math.inf if hi == sre_c.MAXREPEAT else hi) * _max_width(av[2], cap)
        elif op == sre_c.BRANCH:
            total += max(_max_width(alt, cap) for alt in av[1])
        elif op == sre_c.SUBPATTERN:
            total += _max_width(av[3], cap)
        elif op != sre_c.AT:
            total += 1  # one character (literal, class, any)
    return total


def _strip_anchors(seq) -> list:
    """Drop a leading ``^`` and a trailing ``$``: the generated string is the whole match."""
    items = list(seq)
    if items and items[0] in ((sre_c.AT, sre_c.AT_BEGINNING), (sre_c.AT, sre_c.AT_BEGINNING_STRING)):
        items = items[1:]
    if items and items[-1][0] == sre_c.AT and items[-1][1] in (sre_c.AT_END, sre_c.AT_END_STRING):
        items = items[:-1]
    return items


def _parse(pattern: str):
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a string, got {type(pattern).__name__}")
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as e:
        raise ValueError(f"invalid pattern {pattern!r}: {e}") from None
    if parsed.state.flags & ~_ALLOWED_FLAGS:
        raise ValueError(f"pattern {pattern!r} uses inline flags that constrained decoding cannot enforce")
    return parsed


def _top_level(items) -> List[list]:
    """Top-level alternatives; anchors may sit at the ends of each one: "^a$|^b$"."""
    if len(items) == 1 and items[0][0] == sre_c.BRANCH:
        return [_strip_anchors(alt) for alt in items[0][1][1]]
    return [items]


def _cap_for(alts, max_length: int) -> Optional[int]:
    """Largest cap on unbounded repeats that keeps every string within max_length, or None."""
    if max(_max_width(a, None) for a in alts) <= max_length:
        return None  # already short enough: no cap needed
    if max(_max_width(a, 0) for a in alts) > max_length:
        raise ValueError(f"strings matching it are longer than maxLength {max_length}")
    lo, hi = 0, max_length  # width(cap=lo) fits; find the largest cap that still fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if max(_max_width(a, mid) for a in alts) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    return lo


def pattern_content_regex(pattern: str, max_length: Optional[int] = None) -> str:
    """Regex for the JSON-encoded content (no quotes) of strings fully matching ``pattern``.

    With ``max_length``, unbounded repeats (``*``, ``+``, ``{n,}``) are capped so that no
    generated string is longer (a subset of the pattern's strings); ValueError if impossible.
    """
    alts = _top_level(_strip_anchors(_parse(pattern).data))
    try:
        cap = None if max_length is None else _cap_for(alts, max_length)
        body = [_emit_seq(a, cap) for a in alts]
    except ValueError as e:
        raise ValueError(f"pattern {pattern!r}: {e}") from None
    return body[0] if len(body) == 1 else "(?:" + "|".join(body) + ")"


def pattern_min_length(pattern: str) -> int:
    """Shortest decoded length of strings matching ``pattern``."""
    return _parse(pattern).getwidth()[0]
