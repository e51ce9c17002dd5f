"""JSON schema -> xgrammar EBNF grammar: the regex walker of ``json_schema.py`` with named rules.

``json_schema_to_regex`` inlines every ``$ref`` (recursion unrolled up to a depth), so real-world
schemas with shared or recursive definitions give regexes of millions of characters. Here the
same walker (``_Compiler``: same keywords accepted, refused and enforced, same messages) runs with
one change: each ``$ref`` target, per (reference, sibling keywords), is compiled ONCE into a rule
of its own and every use refers to it by name. Recursion needs no unrolling and no depth limit,
and the grammar grows linearly with the schema.

How: ``_ref`` returns a one-character placeholder (a code point of the private-use planes 15-16)
standing for the rule; the walker pastes it into the regexes like any literal. Each rule's regex
is then parsed with Python's own regex parser and re-emitted as EBNF, the placeholders becoming
rule references. Before emitting, rules that derive no finite document (a recursion that is
required forever) are pruned, like the walker drops optional parts it cannot generate; a root
that derives nothing is refused with ValueError.

Differences from the regex (all outputs stay valid): recursion is unbounded; strings keep their
exact ``maxLength`` (the regex path shortens long limits to keep its automaton small, xgrammar
counts repeats natively at no cost); objects whose fields hold references may start with any
field (the regex path's size heuristics see a placeholder where it saw a whole inlined value).
"""

import json
import re
from typing import Dict, List, Optional, Set, Tuple

try:  # Python >= 3.11
    import re._constants as sre_c
    import re._parser as sre_parse
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as sre_c  # type: ignore
    import sre_parse  # type: ignore

from .json_schema import MAX_REGEX_CHARS, SchemaLike, _Compiler, _prepare
from .pattern_regex import _normalize, _subtract
from .schema_merge import Unsatisfiable, merge_all_of

__all__ = ["json_schema_to_ebnf", "regex_to_ebnf", "MAX_GRAMMAR_CHARS"]

# The whole grammar's text; xgrammar compiles a 100K-character grammar in about a second.
MAX_GRAMMAR_CHARS = 1_000_000
# Distinct (reference, sibling keywords) pairs, i.e. rules (each also costs a placeholder).
MAX_RULES = 20_000
# xgrammar stores repeat counts as int32; a larger maxLength is generated up to this (a subset).
MAX_REPEAT_COUNT = 2**31 - 1

_PLACEHOLDER_BASE = 0xF0000  # planes 15 and 16: private use, never in a real schema's output
_PLACEHOLDER_END = 0x10FFFE
_ESCAPED_ASTRAL = re.compile(r"\\U([0-9a-fA-F]{8})")

# ---------------------------------------------------------------- the walker with rules


class _Rule:
    __slots__ = ("name", "regex", "error")

    def __init__(self, name: str):
        self.name = name
        self.regex: Optional[str] = None  # None while compiling, or for an unsatisfiable target
        self.error: Optional[str] = None  # Unsatisfiable's message, once known


class _RuleCompiler(_Compiler):
    """``_Compiler`` whose ``$ref`` (and free "any value") regexes are placeholders of rules."""

    # xgrammar 0.2.9 fills a mask inside a counted repeat of a group ("a character or an escape
    # pair"){m,n} in 20-250 ms per token (measured at maxLength 16-255 on the 49K vocabulary),
    # against ~0.02 ms for a counted repeat of one character class: strings with a length
    # bound are generated without escape sequences (a valid subset); unbounded ones keep them.
    counted_escapes = False

    def __init__(self, root, validator_cls, whitespace: str, any_depth: int, reserved: Set[int]):
        super().__init__(root, validator_cls, whitespace, max_recursion_depth=0, any_depth=any_depth,
                         max_counted_chars=MAX_REPEAT_COUNT)
        self.rules: List[_Rule] = []
        self.codes: List[int] = []  # placeholder code point of each rule
        self.by_code: Dict[int, int] = {}
        self._by_key: Dict[Tuple, int] = {}
        self._names: Set[str] = set()
        self._reserved = reserved
        self._next_code = _PLACEHOLDER_BASE

    def _new_rule(self, key: Tuple, stem: str) -> int:
        if len(self.rules) >= MAX_RULES:
            raise ValueError(f"JSON schema is too large to compile: more than {MAX_RULES:,} distinct $ref uses")
        while self._next_code in self._reserved:
            self._next_code += 1
        if self._next_code > _PLACEHOLDER_END:  # pragma: no cover - MAX_RULES is far below
            raise ValueError("JSON schema is too large to compile: out of rule placeholders")
        name, n = stem, 1
        while name in self._names:
            n += 1
            name = f"{stem}_{n}"
        self._names.add(name)
        idx = len(self.rules)
        self.rules.append(_Rule(name))
        self.codes.append(self._next_code)
        self.by_code[self._next_code] = idx
        self._by_key[key] = idx
        self._next_code += 1
        return idx

    def _rule(self, key: Tuple, stem: str, build) -> str:
        """Placeholder of the rule for ``key``, whose regex ``build()`` makes on first use."""
        idx = self._by_key.get(key)
        if idx is None:
            idx = self._new_rule(key, stem)
            rule = self.rules[idx]
            try:
                rule.regex = build()
            except Unsatisfiable as e:
                rule.error = str(e)
                raise
        rule = self.rules[idx]
        if rule.error is not None:
            raise Unsatisfiable(rule.error)
        return chr(self.codes[idx])  # in progress (recursion) or done

    def _ref(self, schema: dict) -> str:
        ref = schema["$ref"]
        target = self._resolve(ref)
        rest = self._siblings(schema, "$ref")
        key = ("ref", ref, json.dumps(rest, sort_keys=True, default=repr))

        def build():
            return self.node(merge_all_of([self._flatten(target), rest]) if rest else target)

        return self._rule(key, _rule_stem(ref), build)

    def node(self, schema) -> str:
        # allOf merges its parts after resolving their top-level $refs in place (``_flatten``),
        # which bypasses ``_ref``: a recursion through allOf (patternProperties values, a
        # property matching patterns...) would be inlined forever. Such an allOf is a rule too.
        if isinstance(schema, dict) and "allOf" in schema and "$ref" not in schema:
            ref = _first_ref(schema["allOf"])
            if ref is not None:
                key = ("allOf", json.dumps(schema, sort_keys=True, default=repr))
                return self._rule(key, "all_" + _rule_stem(ref), lambda: super(_RuleCompiler, self).node(schema))
        return super().node(schema)

    def any_value(self, depth: int) -> str:
        return self._rule(("any", depth), f"any_value_{depth}", lambda: super(_RuleCompiler, self).any_value(depth))


def _first_ref(parts) -> Optional[str]:
    """The first $ref that ``_flatten`` would resolve in place among allOf ``parts``."""
    if not isinstance(parts, list):
        return None
    for part in parts:
        if isinstance(part, dict):
            if isinstance(part.get("$ref"), str):
                return part["$ref"]
            found = _first_ref(part.get("allOf"))
            if found is not None:
                return found
    return None


def _rule_stem(ref: str) -> str:
    if ref == "#":
        return "root"
    last = ref.rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"[^A-Za-z0-9_]", "_", last).strip("_")
    if not stem or not stem[0].isalpha():
        stem = "r_" + stem
    return stem[:48] + ("_" if stem == "root" else "")


def _reserved_codes(schema) -> Set[int]:
    """Private-use code points the schema itself could put in a regex as literals (raw in its
    strings, or as ``\\U`` escapes in patterns): placeholders skip them."""
    out: Set[int] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            out.update(ord(ch) for ch in node if ord(ch) >= _PLACEHOLDER_BASE)
            if "\\U" in node:
                out.update(int(h, 16) for h in _ESCAPED_ASTRAL.findall(node))
    return {c for c in out if c >= _PLACEHOLDER_BASE}


# ---------------------------------------------------------------- regex -> AST
#
# Nodes: ("lit", text) | ("cls", negated, ((lo, hi), ...)) | ("ref", rule) | ("seq", [nodes])
# | ("alt", [nodes]) | ("rep", node, lo, hi or None). ``None`` stands for the empty language.

_EPSILON = ("seq", [])
_ASCII_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: ((0x30, 0x39),),
    sre_c.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    sre_c.CATEGORY_SPACE: ((0x09, 0x0D), (0x20, 0x20)),
}
_NEGATED_CATEGORIES = {
    sre_c.CATEGORY_NOT_DIGIT: sre_c.CATEGORY_DIGIT,
    sre_c.CATEGORY_NOT_WORD: sre_c.CATEGORY_WORD,
    sre_c.CATEGORY_NOT_SPACE: sre_c.CATEGORY_SPACE,
}
_SURROGATES = (0xD800, 0xDFFF)


def _merge_ranges(ranges) -> Tuple[Tuple[int, int], ...]:
    return tuple(_normalize(ranges))


def _category(cat) -> tuple:
    """Ranges of a ``\\d``-style category, ASCII-only: a subset of Python's Unicode classes
    (``\\D`` and friends become printable ASCII minus the class). Our walker writes explicit
    ranges; this serves other regexes (whitespace patterns)."""
    if cat in _ASCII_CATEGORIES:
        return _ASCII_CATEGORIES[cat]
    if cat in _NEGATED_CATEGORIES:
        return tuple(_subtract([(0x20, 0x7E)], _ASCII_CATEGORIES[_NEGATED_CATEGORIES[cat]]))
    raise ValueError(f"unsupported regex category {cat}")


class _Translator:
    def __init__(self, by_code: Dict[int, int]):
        self.by_code = by_code

    def regex(self, regex: str):
        try:
            parsed = sre_parse.parse(regex)
        except OverflowError:  # a count Python's regex parser cannot hold (minItems 10**10...)
            raise ValueError("JSON schema is too large to compile: a repeat count above "
                             f"{MAX_REPEAT_COUNT:,}") from None
        except re.error as e:  # pragma: no cover - the walker writes valid regexes
            raise ValueError(f"internal error: invalid regex from the schema walker ({e})") from None
        if parsed.state.flags & ~(sre_c.SRE_FLAG_UNICODE | sre_c.SRE_FLAG_VERBOSE):
            raise ValueError("unsupported regex flags in the grammar")
        return self.seq(parsed.data)

    def seq(self, items):
        out = []
        for op, av in items:
            node = self.item(op, av)
            if node is None:
                return None
            out.append(node)
        return out[0] if len(out) == 1 else ("seq", out)

    def literal(self, code: int):
        if code in self.by_code:
            return ("ref", self.by_code[code])
        if _SURROGATES[0] <= code <= _SURROGATES[1]:
            return None  # a lone surrogate never appears in UTF-8 output
        return ("lit", chr(code))

    def item(self, op, av):
        if op == sre_c.LITERAL:
            return self.literal(av)
        if op == sre_c.NOT_LITERAL:
            return ("cls", True, _merge_ranges([(av, av), _SURROGATES]))
        if op == sre_c.ANY:  # no DOTALL flag: any character but a newline
            return ("cls", True, ((0x0A, 0x0A), _SURROGATES))
        if op == sre_c.IN:
            return self.char_class(av)
        if op == sre_c.BRANCH:
            alts = [a for a in (self.seq(alt) for alt in av[1]) if a is not None]
            return None if not alts else alts[0] if len(alts) == 1 else ("alt", alts)
        if op == sre_c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if (add_flags & ~(sre_c.SRE_FLAG_UNICODE | sre_c.SRE_FLAG_VERBOSE)) or del_flags:
                raise ValueError("unsupported inline regex flags in the grammar")
            return self.seq(sub)
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            lo, hi, sub = av
            if lo > MAX_REPEAT_COUNT:
                raise ValueError(f"JSON schema is too large to compile: a repeat count of {lo:,} (limit {MAX_REPEAT_COUNT:,})")
            hi = None if hi == sre_c.MAXREPEAT else min(hi, MAX_REPEAT_COUNT)
            return _repeat(self.seq(sub), lo, hi)
        raise ValueError(f"unsupported regex construct in the grammar: {op}")

    def char_class(self, items):
        negated = bool(items) and items[0][0] == sre_c.NEGATE
        ranges: List[Tuple[int, int]] = []
        refs = []
        for op, av in items[1:] if negated else items:
            if op == sre_c.LITERAL:
                if av in self.by_code and not negated:
                    refs.append(("ref", self.by_code[av]))  # (?:PH1|PH2) parses as a class
                else:
                    ranges.append((av, av))
            elif op == sre_c.RANGE:
                ranges.append(tuple(av))
            elif op == sre_c.CATEGORY and not negated:
                ranges.extend(_category(av))
            else:
                raise ValueError(f"unsupported regex construct in a character class: {op}")
        # surrogates never appear in UTF-8 text, but xgrammar's classes would emit their
        # (invalid) 3-byte forms: left out of every class
        ranges = _subtract(ranges, [_SURROGATES]) if not negated else ranges + [_SURROGATES]
        parts = refs + ([("cls", negated, _merge_ranges(ranges))] if ranges or negated else [])
        return None if not parts else parts[0] if len(parts) == 1 else ("alt", parts)


def _repeat(node, lo: int, hi: Optional[int]):
    if hi == 0 or node == _EPSILON:
        return _EPSILON
    if node is None:
        return _EPSILON if lo == 0 else None
    if (lo, hi) == (1, 1):
        return node
    return ("rep", node, lo, hi)


# ---------------------------------------------------------------- productive rules, pruning


def _prune(node, alive):
    """``node`` without references to rules outside ``alive``; None if it derives nothing."""
    kind = node[0]
    if kind in ("lit", "cls"):
        return node
    if kind == "ref":
        return node if node[1] in alive else None
    if kind == "seq":
        out = []
        for child in node[1]:
            child = _prune(child, alive)
            if child is None:
                return None
            out.append(child)
        return out[0] if len(out) == 1 else ("seq", out)
    if kind == "alt":
        out = [c for c in (_prune(child, alive) for child in node[1]) if c is not None]
        return None if not out else out[0] if len(out) == 1 else ("alt", out)
    _, body, lo, hi = node
    return _repeat(_prune(body, alive), lo, hi)


def _refs(node, out: Set[int]) -> Set[int]:
    kind = node[0]
    if kind == "ref":
        out.add(node[1])
    elif kind in ("seq", "alt"):
        for child in node[1]:
            _refs(child, out)
    elif kind == "rep":
        _refs(node[1], out)
    return out


def _derives(node, alive) -> bool:
    """Whether ``node`` derives a finite string using only the rules in ``alive``."""
    kind = node[0]
    if kind == "ref":
        return node[1] in alive
    if kind == "seq":
        return all(_derives(child, alive) for child in node[1])
    if kind == "alt":
        return any(_derives(child, alive) for child in node[1])
    if kind == "rep":
        return node[2] == 0 or _derives(node[1], alive)
    return True  # literals and classes (empty classes are None already)


def _productive(bodies: Dict[int, object]) -> Set[int]:
    """Rules deriving at least one finite string (the classic fixpoint)."""
    alive: Set[int] = set()
    grew = True
    while grew:
        grew = False
        for idx in sorted(bodies, reverse=True):  # rules made later are usually referred to
            body = bodies[idx]
            if idx not in alive and body is not None and _derives(body, alive):
                alive.add(idx)
                grew = True
    return alive


# ---------------------------------------------------------------- AST -> EBNF text


def _char_escape(code: int, in_class: bool) -> str:
    ch = chr(code)
    if ch == "\\":
        return "\\\\"
    if in_class and ch in "]-[^":
        return "\\" + ch
    if not in_class and ch == '"':
        return '\\"'
    if 0x20 <= code < 0x7F:
        return ch
    if code < 0x80:
        return "\\x%02x" % code
    if code <= 0xFFFF:
        return "\\u%04x" % code
    return "\\U%08x" % code


def _emit(node, names: List[str], atom: bool = False) -> str:
    """EBNF of ``node``; ``atom`` asks for one element (a postfix operator follows)."""
    kind = node[0]
    if kind == "lit":
        return '"' + "".join(_char_escape(ord(c), False) for c in node[1]) + '"'
    if kind == "cls":
        _, negated, ranges = node
        body = "".join(
            _char_escape(lo, True) if lo == hi else f"{_char_escape(lo, True)}-{_char_escape(hi, True)}"
            for lo, hi in ranges
        )
        return "[" + ("^" if negated else "") + body + "]"
    if kind == "ref":
        return names[node[1]]
    if kind == "rep":
        _, body, lo, hi = node
        inner = _emit(body, names, atom=True)
        if hi is None:
            suffix = "*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo
        elif lo == hi:
            suffix = "{%d}" % lo
        else:
            suffix = "?" if (lo, hi) == (0, 1) else "{%d,%d}" % (lo, hi)
        return f"({inner}{suffix})" if atom else inner + suffix
    if kind == "seq":
        parts = _merge_literals(node[1])
        if not parts:
            return '""'
        text = " ".join(_emit(p, names, atom=len(parts) == 1 and atom) for p in parts)
        return f"({text})" if atom and len(parts) > 1 else text
    text = " | ".join(_emit(p, names) for p in node[1])
    return f"({text})"


def _merge_literals(parts) -> list:
    out = []
    for p in parts:
        if p[0] == "seq":  # nested sequences (from pruning) flatten
            out.extend(_merge_literals(p[1]))
        elif p[0] == "lit" and out and out[-1][0] == "lit":
            out[-1] = ("lit", out[-1][1] + p[1])
        else:
            out.append(p)
    return out


def regex_to_ebnf(regex: str, root: str = "root") -> str:
    """One-rule EBNF grammar matching exactly what ``re.fullmatch(regex)`` matches (the regex
    dialect our walker writes: literals, classes, groups, alternation, repeats)."""
    node = _Translator({}).regex(regex)
    if node is None:
        raise ValueError("the regex matches nothing")
    return f"{root} ::= {_emit(node, [])}\n"


# ---------------------------------------------------------------- entry point


def json_schema_to_ebnf(
    schema: SchemaLike,
    whitespace_pattern: Optional[str] = None,
    any_value_depth: int = 1,
) -> str:
    """xgrammar EBNF grammar (root rule ``root``) for JSON documents valid against ``schema``.

    Same arguments and refusals as :func:`json_schema_to_regex` (minus ``max_recursion_depth``:
    recursion goes through named rules); ValueError for an invalid or unsupported schema, one
    no generated value satisfies (incl. a recursion required forever), or a grammar too large.
    """
    loaded, validator_cls, whitespace_pattern = _prepare(schema, whitespace_pattern)
    compiler = _RuleCompiler(loaded, validator_cls, whitespace_pattern, any_value_depth, _reserved_codes(loaded))
    try:
        compiler._ref({"$ref": "#"})  # the root is the rule of "#", named root
        return _grammar(compiler)
    except Unsatisfiable as e:
        raise ValueError(f"JSON schema cannot be satisfied by generated output: {e}") from None
    except RecursionError:
        raise ValueError("JSON schema is nested too deeply") from None


def _grammar(compiler: _RuleCompiler) -> str:
    rules = compiler.rules
    translate = _Translator(compiler.by_code)
    bodies: Dict[int, object] = {}
    for idx, rule in enumerate(rules):
        if rule.regex is None:
            bodies[idx] = None  # its target was unsatisfiable
            continue
        if len(rule.regex) > MAX_REGEX_CHARS:
            raise ValueError(
                f"JSON schema is too large to compile: the regex of its rule {rule.name!r} has "
                f"{len(rule.regex):,} characters (limit {MAX_REGEX_CHARS:,}); split it or drop optional parts"
            )
        bodies[idx] = translate.regex(rule.regex)
    alive = _productive(bodies)
    if 0 not in alive:
        cycle = sorted({rules[i].name for i in _reachable(bodies, 0) if i not in alive and bodies[i] is not None})
        raise Unsatisfiable(
            "no finite document: the recursion through " + ", ".join(cycle[:5]) + " never ends"
            if cycle else "its root matches nothing"
        )
    pruned = {idx: _prune(bodies[idx], alive) for idx in alive}
    names = [r.name for r in rules]
    lines = []
    for idx in sorted(_reachable(pruned, 0)):
        lines.append(f"{names[idx]} ::= {_emit(pruned[idx], names)}")
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ValueError(
            f"JSON schema is too large to compile: its grammar has {len(text):,} characters "
            f"(limit {MAX_GRAMMAR_CHARS:,}); split it or drop optional parts"
        )
    return text


def _reachable(bodies: Dict[int, object], start: int) -> Set[int]:
    seen, stack = {start}, [start]
    while stack:
        body = bodies.get(stack.pop())
        if body is None:
            continue
        for ref in _refs(body, set()):
            if ref not in seen:
                seen.add(ref)
                stack.append(ref)
    return seen
