"""Tool calls read back out of a chat model's generated text, whole or while it streams.

``parse_tool_calls(text, fmt, tool_names)`` splits a finished output into its normal text and its
calls; ``StreamingToolParser`` does the same as the text arrives, emitting ``ContentDelta``,
``CallBegin`` and ``ArgumentsDelta`` items. Both run the same scanner, so they agree (see the
exceptions below). Only the standard library is used.

What counts as a call
---------------------
``fmt`` is one of ``formats.FORMATS`` (``None``: every format is recognised, whichever begin marker
appears first).

- ``qwen25``: ``<tool_call>`` ws call-object [ws ``</tool_call>``]. The closing tag is optional: a
  complete call object counts as a call whatever follows it (what follows is normal text).
- ``mistral``: ``[TOOL_CALLS]`` ws ``[`` call-object (``,`` call-object)* ``]``, or ``[TOOL_CALLS]``
  ws call-object. The closing ``]`` is optional like Qwen's closing tag.
- ``llama3``: a call object anywhere in the text, optionally after ``<|python_tag|>`` (and ws).
- ``json``: a call object anywhere in the text, or a JSON array of call objects that is the first
  thing in the text (only whitespace before its ``[``).

A call object is ``{"name": <string>, "arguments": <object>}``, keys in either order, with any JSON
whitespace between tokens. ``"parameters"`` is accepted instead of ``"arguments"`` in every format.
It is a call only if the whole object is valid JSON (``NaN``/``Infinity`` rejected), has exactly
those two keys, its name is one of ``tool_names``, and the arguments value is a JSON object, or a
JSON string whose content parses as a JSON object (``ToolCall.arguments`` is then that decoded
content, stripped). Otherwise the text stays normal text, verbatim: an unknown name, an extra key,
malformed JSON, a begin marker followed by prose.

How a failed candidate is left as text (decided here): when the text stops being a possible call
before the object is complete (a key other than name/arguments/parameters, a missing ``:`` or
``,``, a name that is not a string...), the text up to that point is normal text and scanning goes
on from the offending token, so a call object may still begin after it. When a complete object is
rejected (unknown name, bad JSON inside), the whole object is normal text and nothing inside it is
looked at again.

Normal text
-----------
``normal_text`` is the text outside valid calls (begin markers, closing tags, ``[``/``,``/``]``
of an array of calls belong to the calls), concatenated in order, except that a whitespace-only
stretch lying between a call and the next call, or between the last call and the end of the text,
is dropped. After a Llama 3 call (bare object or ``<|python_tag|>``, also with ``fmt=None``) such a
stretch may also hold one ``;`` separator (``\\s*;\\s*``), which is dropped with it. Whitespace just
before the first call's begin marker is kept (callers strip it). A stretch that holds anything else
is kept whole, its whitespace included.

Streaming
---------
Text that cannot begin a call is emitted at once. Text that may begin one (a partial begin marker
at the end of what has arrived, or, for ``llama3``/``json``, a ``{`` that may still grow into a call
object) is held back until it is decided. As soon as ``{ "name" : "<tool name>" , "<args key>" :``
and the first character of the arguments value, ``{``, have arrived, ``CallBegin`` is emitted and
then the arguments object's raw text as it arrives (``ArgumentsDelta``), ending exactly at its
closing brace (never the call object's own ``}`` or a closing tag). A call written otherwise (the
arguments key first, an unknown name, arguments given as a JSON string) is held until its object is
complete and then emitted at once (``CallBegin`` and one ``ArgumentsDelta``) or released as text.

The invariant: for any text cut into any chunks, feeding them and then calling ``finish()`` gives
ContentDelta texts that concatenate to ``parse_tool_calls``'s ``normal_text``, and CallBegin names
with per-index concatenated ArgumentsDelta texts equal to its calls, whenever every call that
streaming has begun turns out complete and valid.

Exception (the stream cannot take a call back): once ``CallBegin`` is out, streaming reports that
call even when it then turns out not to be one: the text ends inside the arguments or before the
call object's ``}`` (generation stopped at max tokens), or the arguments JSON is malformed, or the
call object has an extra key after the arguments. ``parse_tool_calls`` keeps that span as normal
text and has no such call. After such a broken call the stream goes on scanning from the offending
character (it is normal text in both); the whitespace between the arguments and that character is
not emitted.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Collection, Dict, Iterator, List, Optional, Tuple, Union

from sgl.runtime.function_call.formats import FORMATS, ToolFormat

__all__ = ["ToolCall", "parse_tool_calls", "ContentDelta", "CallBegin", "ArgumentsDelta",
           "StreamingToolParser"]


# ---- public types ------------------------------------------------------------------------------------
@dataclass
class ToolCall:
    name: str
    arguments: str  # the arguments object's JSON text as the model wrote it (or a string's decoded content)


@dataclass
class ContentDelta:
    text: str


@dataclass
class CallBegin:
    index: int  # counts the calls of this output from 0
    name: str


@dataclass
class ArgumentsDelta:
    index: int
    text: str


StreamItem = Union[ContentDelta, CallBegin, ArgumentsDelta]


# ---- what to look for ----------------------------------------------------------------------------------
_JSON_WS = " \t\n\r"
_ARGS_KEYS = ("arguments", "parameters")
_KEYS = ("name",) + _ARGS_KEYS
_MAX_KEY_TOKEN = 64  # a key spelled with \u escapes is still shorter than this
_STR_SKIP = re.compile(r'[^"\\]*')  # inside a JSON string: up to a quote or a backslash
_OBJ_SKIP = re.compile(r'[^"{}]*')  # outside strings: up to a quote or a brace


@dataclass(frozen=True)
class _Opening:
    text: str  # the begin marker ("{" for a bare object, "[" for the json format's leading array)
    end_tag: str  # optional closing tag after the call object ("" for none)
    array: bool  # the marker may be followed by a JSON array of calls
    separator: str  # a separator that may stand (with whitespace) after such a call ("" for none)


@dataclass(frozen=True)
class _Spec:
    markers: Tuple[_Opening, ...]  # literal begin markers
    bare: Optional[_Opening]  # a call object may start at any "{"
    leading_array: Optional[_Opening]  # an array of calls at the start of the text
    triggers: "re.Pattern[str]"  # the first characters of all of the above


@functools.lru_cache(maxsize=None)
def _spec_for(fmt: Optional[ToolFormat]) -> _Spec:
    formats = list(FORMATS.values()) if fmt is None else [fmt]
    markers: Dict[str, _Opening] = {}
    bare_sep: Optional[str] = None
    leading_array = False
    for f in formats:
        sep = f.separator.strip()
        if f.trigger.startswith("{"):  # a bare JSON object (llama3, json)
            bare_sep = sep if not bare_sep else bare_sep
            leading_array = leading_array or f.name == "json"
        elif f.array:  # Mistral: the marker, then an array (the suffix closes the array)
            markers.setdefault(f.trigger, _Opening(f.trigger, "", True, ""))
        else:  # Qwen: the marker, an object, a closing tag
            markers.setdefault(f.trigger, _Opening(f.trigger, f.call_suffix.strip(), False, sep))
        for extra in f.extra_prefixes:  # Llama's <|python_tag|>
            markers.setdefault(extra, _Opening(extra, f.call_suffix.strip(), False, sep))
    bare = _Opening("{", "", False, bare_sep) if bare_sep is not None else None
    array = _Opening("[", "", True, "") if leading_array else None
    firsts = {m[0] for m in markers} | ({"{"} if bare else set()) | ({"["} if array else set())
    triggers = re.compile("[" + re.escape("".join(sorted(firsts))) + "]" if firsts else "(?!)")
    return _Spec(tuple(markers.values()), bare, array, triggers)


@functools.lru_cache(maxsize=None)
def _separator_re(separator: str) -> "re.Pattern[str]":
    """A stretch between two calls that is dropped (its prefixes match too: the stream holds them)."""
    if not separator:
        return re.compile(r"\s*")
    return re.compile(r"\s*(?:" + re.escape(separator) + r"\s*)?")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _loads(text: str):
    return json.loads(text, parse_constant=_reject_constant)


def _decode_string(token: str) -> Optional[str]:
    try:
        value = _loads(token)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, str) else None


# ---- the scanner -----------------------------------------------------------------------------------
# Events (tuples), in text order:
#   ("text", s)                       normal text
#   ("begin", name, restore, sep)     a call begins; restore: where its text starts (for rollback)
#   ("args", s)                       arguments text of the current call
#   ("end",)                          the current call is complete
#   ("broken", resume)                the current call is not one after all; [restore, resume) is text
_OK, _FAIL, _BROKEN = "ok", "fail", "broken"


class _Scanner:
    """Reads the text as it arrives and records events; decisions depend only on the characters seen
    (and on the end of the text), never on where the chunks were cut.

    Written as one generator that suspends (``yield``) when it needs characters that have not
    arrived; ``feed`` appends and resumes it. ``strict`` (the whole-text parser) also checks the
    JSON of calls that were begun early and turns a bad one into a ``broken`` event; it keeps the
    whole text, while a streaming scanner drops what it will not read again."""

    def __init__(self, fmt: Optional[ToolFormat], tool_names: Collection[str], strict: bool):
        self._spec = _spec_for(fmt)
        self._names = frozenset(tool_names)
        self._strict = strict
        self._buf = ""
        self._base = 0  # position in the whole text of _buf[0]
        self._keep = 0  # nothing before this position is read again
        self._eof = False
        self._at_start = True  # only whitespace so far
        self._events: list = []
        self._gen = self._run()
        next(self._gen)

    def feed(self, text: str) -> list:
        if self._eof:
            raise RuntimeError("feed() after finish()")
        if text:
            self._buf += text
            next(self._gen)
            drop = self._keep - self._base
            if not self._strict and drop > 0 and (drop >= 4096 or 2 * drop >= len(self._buf)):
                self._buf = self._buf[drop:]
                self._base = self._keep
        events, self._events = self._events, []
        return events

    def finish(self) -> list:
        if not self._eof:
            self._eof = True
            try:
                next(self._gen)
            except StopIteration:
                pass
            else:  # pragma: no cover - every wait returns at the end of the text
                raise AssertionError("the scanner waited for text after the end")
        events, self._events = self._events, []
        return events

    # -- buffer access (positions are in the whole text) --
    def _end(self) -> int:
        return self._base + len(self._buf)

    def _ch(self, p: int) -> str:
        """The character at p; "" past what has arrived (after a wait: the end of the text)."""
        i = p - self._base
        return self._buf[i] if i < len(self._buf) else ""

    def _slice(self, a: int, b: int) -> str:
        return self._buf[a - self._base:b - self._base]

    def _text(self, a: int, b: int) -> None:
        if b > a:
            s = self._slice(a, b)
            if self._at_start and not s.isspace():
                self._at_start = False
            self._events.append(("text", s))

    # -- the top level: normal text, looking for begin markers --
    def _run(self) -> Iterator[None]:
        spec = self._spec
        p = 0
        while True:
            self._keep = p
            n = self._end()
            if p >= n:
                if self._eof:
                    return
                yield
                continue
            m = spec.triggers.search(self._buf, p - self._base)
            q = n if m is None else m.start() + self._base
            self._text(p, q)  # cannot begin a call: out at once
            p = q
            if m is None:
                continue
            self._keep = p
            opening = yield from self._opening_at(p)
            if opening is None:
                self._text(p, p + 1)
                p += 1
                continue
            self._at_start = False
            p = yield from self._block(opening, p)

    def _opening_at(self, q: int):
        """The opening that starts at q, or None; waits while a marker is only partly there."""
        spec = self._spec
        while True:
            c = self._ch(q)
            partial = False
            for mk in spec.markers:
                if mk.text[0] != c:
                    continue
                have = self._slice(q, q + len(mk.text))
                if have == mk.text:
                    return mk
                if len(have) < len(mk.text) and mk.text.startswith(have) and not self._eof:
                    partial = True
            if partial:
                yield
                continue
            if c == "{" and spec.bare is not None:
                return spec.bare
            if c == "[" and spec.leading_array is not None and self._at_start:
                return spec.leading_array
            return None

    def _block(self, opening: _Opening, start: int):
        """Calls after the opening at start; returns where normal scanning goes on."""
        spec = self._spec
        if opening is spec.bare:
            return (yield from self._single(start, start, opening))
        if opening is spec.leading_array:
            return (yield from self._array(start, start + 1))
        p = yield from self._skip_ws(start + len(opening.text))
        c = self._ch(p)
        if c == "[" and opening.array:
            return (yield from self._array(start, p + 1))
        if c != "{":
            self._text(start, p)
            return p
        return (yield from self._single(start, p, opening))

    def _single(self, start: int, p: int, opening: _Opening):
        result, pos = yield from self._call(p, start, opening.separator)
        if result == _FAIL:
            self._text(start, pos)
            return pos
        if result == _OK and opening.end_tag:
            self._keep = pos
            t = yield from self._skip_ws(pos)
            if (yield from self._expect(t, opening.end_tag)):
                return t + len(opening.end_tag)
        return pos

    def _array(self, start: int, p: int):
        """The calls of a JSON array; p is just after its "[". A "]" that never comes is not needed."""
        restore = start  # where the text of the next call (rolled back on failure) starts
        while True:
            p = yield from self._skip_ws(p)
            if self._ch(p) != "{":
                self._text(restore, p)
                return p
            result, pos = yield from self._call(p, restore, "")
            if result == _FAIL:
                self._text(restore, pos)
                return pos
            if result == _BROKEN:
                return pos
            restore = self._keep = pos
            t = yield from self._skip_ws(pos)
            c = self._ch(t)
            if c == ",":
                p = t + 1
            elif c == "]":
                return t + 1
            else:
                return pos

    # -- one call object --
    def _call(self, o: int, restore: int, sep: str):
        """The call object whose "{" is at o: (_OK, end) with its events recorded, (_FAIL, resume)
        with nothing recorded, or (_BROKEN, resume) after a begun call fell through."""
        p = yield from self._skip_ws(o + 1)
        first, after = yield from self._key(p)
        if first is None:
            return _FAIL, p
        ok, p = yield from self._punct(after, ":")
        if not ok:
            return _FAIL, p
        if first == "name":
            if self._ch(p) != '"':
                return _FAIL, p
            q = yield from self._string(p)
            if q is None:
                return _FAIL, self._end()
            name = _decode_string(self._slice(p, q))
            ok, p = yield from self._punct(q, ",")
            if not ok:
                return _FAIL, p
            key, after = yield from self._key(p)
            if key not in _ARGS_KEYS:
                return _FAIL, p
            ok, p = yield from self._punct(after, ":")
            if not ok:
                return _FAIL, p
            if self._ch(p) == "{" and name in self._names:
                return (yield from self._begun_call(o, p, restore, name, sep))
            a0, a1 = p, (yield from self._args_value(p))
            if a1 is None or a1 < 0:
                return _FAIL, (self._end() if a1 is None else p)
            p = yield from self._skip_ws(a1)
        else:  # the arguments first: held until the object is complete
            a0, a1 = p, (yield from self._args_value(p))
            if a1 is None or a1 < 0:
                return _FAIL, (self._end() if a1 is None else p)
            ok, p = yield from self._punct(a1, ",")
            if not ok:
                return _FAIL, p
            key, after = yield from self._key(p)
            if key != "name":
                return _FAIL, p
            ok, p = yield from self._punct(after, ":")
            if not ok:
                return _FAIL, p
            if self._ch(p) != '"':
                return _FAIL, p
            q = yield from self._string(p)
            if q is None:
                return _FAIL, self._end()
            p = yield from self._skip_ws(q)
        if self._ch(p) != "}":
            return _FAIL, p
        end = p + 1
        call = self._check(o, end, a0, a1)
        if call is None:
            return _FAIL, end
        self._events += [("begin", call.name, restore, sep), ("args", call.arguments), ("end",)]
        return _OK, end

    def _begun_call(self, o: int, p: int, restore: int, name: str, sep: str):
        """Name known and arguments an object: the call begins now and its arguments stream."""
        self._events.append(("begin", name, restore, sep))
        a1 = yield from self._object(p, stream=True)
        if a1 is None:
            self._events.append(("broken", self._end()))
            return _BROKEN, self._end()
        self._keep = a1
        q = yield from self._skip_ws(a1)
        if self._ch(q) != "}":
            self._events.append(("broken", q))
            return _BROKEN, q
        end = q + 1
        if self._strict and self._check(o, end, p, a1) is None:
            self._events.append(("broken", end))
            return _BROKEN, end
        self._events.append(("end",))
        return _OK, end

    def _check(self, o: int, end: int, a0: int, a1: int) -> Optional[ToolCall]:
        """The complete object [o, end) as a call (arguments at [a0, a1)), or None."""
        try:
            obj = _loads(self._slice(o, end))
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or len(obj) != 2:
            return None
        name = obj.get("name")
        keys = [k for k in obj if k != "name"]
        if not isinstance(name, str) or name not in self._names or len(keys) != 1 or keys[0] not in _ARGS_KEYS:
            return None
        args = obj[keys[0]]
        if isinstance(args, dict):
            return ToolCall(name, self._slice(a0, a1))
        if isinstance(args, str):
            inner = args.strip()
            try:
                if isinstance(_loads(inner), dict):
                    return ToolCall(name, inner)
            except (ValueError, RecursionError):
                pass
        return None

    # -- JSON pieces --
    def _skip_ws(self, p: int):
        while True:
            buf, base = self._buf, self._base
            n = base + len(buf)
            while p < n and buf[p - base] in _JSON_WS:
                p += 1
            if p < n or self._eof:
                return p
            yield

    def _punct(self, p: int, char: str):
        """(True, position after char and whitespace) if char comes next, else (False, its position)."""
        p = yield from self._skip_ws(p)
        if self._ch(p) != char:
            return False, p
        p = yield from self._skip_ws(p + 1)
        return True, p

    def _expect(self, p: int, s: str):
        """Whether the text at p is s (waits while it might still be)."""
        while True:
            have = self._slice(p, p + len(s))
            if have == s:
                return True
            if len(have) == len(s) or not s.startswith(have) or self._eof:
                return False
            yield

    def _key(self, p: int):
        """(key, position after it) for a call object's key at p, else (None, p). Gives up as soon
        as the key cannot be name/arguments/parameters."""
        if self._ch(p) != '"':
            return None, p
        q = p + 1
        while True:
            n = self._end()
            while q < n:
                c = self._ch(q)
                if c == '"':
                    key = _decode_string(self._slice(p, q + 1))
                    return (key if key in _KEYS else None), q + 1
                if c == "\\":
                    if q + 1 >= n:
                        break
                    q += 2
                else:
                    q += 1
                raw = self._slice(p + 1, q)
                if len(raw) > _MAX_KEY_TOKEN or ("\\" not in raw and not any(k.startswith(raw) for k in _KEYS)):
                    return None, p
            if self._eof:
                return None, p
            yield

    def _args_value(self, p: int):
        """End of an arguments value (object or string) at p; None at the end of the text; -1 if
        the value is neither."""
        c = self._ch(p)
        if c == "{":
            return (yield from self._object(p, stream=False))
        if c == '"':
            return (yield from self._string(p))
        return -1

    def _string(self, p: int):
        """The position after the JSON string whose quote is at p, or None at the end of the text."""
        q = p + 1
        while True:
            buf, base = self._buf, self._base
            n = base + len(buf)
            while q < n:
                q = _STR_SKIP.match(buf, q - base).end() + base
                if q >= n:
                    break
                if buf[q - base] == '"':
                    return q + 1
                if q + 1 >= n:  # a backslash: wait for the character it escapes
                    break
                q += 2
            if self._eof:
                return None
            yield

    def _object(self, p: int, stream: bool):
        """The position after the JSON object whose "{" is at p (braces counted outside strings), or
        None at the end of the text. ``stream``: record its text as "args" events as it arrives."""
        depth = 0
        in_string = False
        q = sent = p
        while True:
            buf, base = self._buf, self._base
            n = base + len(buf)
            while q < n:
                if in_string:
                    q = _STR_SKIP.match(buf, q - base).end() + base
                    if q >= n:
                        break
                    if buf[q - base] == '"':
                        in_string = False
                        q += 1
                    elif q + 1 >= n:
                        break
                    else:
                        q += 2
                    continue
                q = _OBJ_SKIP.match(buf, q - base).end() + base
                if q >= n:
                    break
                c = buf[q - base]
                q += 1
                if c == '"':
                    in_string = True
                elif c == "{":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        if stream:
                            self._events.append(("args", self._slice(sent, q)))
                        return q
            if stream and q > sent:
                self._events.append(("args", self._slice(sent, q)))
                sent = q
                if not self._strict:
                    self._keep = q
            if self._eof:
                return None
            yield


# ---- whole text ------------------------------------------------------------------------------------
def parse_tool_calls(text: str, fmt: Optional[ToolFormat],
                     tool_names: Collection[str]) -> Tuple[str, List[ToolCall]]:
    """(normal_text, calls) of a finished output; see the module docstring for the rules."""
    scanner = _Scanner(fmt, tool_names, strict=True)
    events = scanner.feed(text) + scanner.finish()
    pieces: list = []  # normal text (str) and calls ((ToolCall, separator)), alternating

    def add_text(s: str) -> None:
        if not s:
            return
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += s
        else:
            pieces.append(s)

    current = None  # [name, [args pieces], restore, separator]
    for ev in events:
        kind = ev[0]
        if kind == "text":
            add_text(ev[1])
        elif kind == "begin":
            current = [ev[1], [], ev[2], ev[3]]
        elif kind == "args":
            current[1].append(ev[1])
        elif kind == "end":
            pieces.append((ToolCall(current[0], "".join(current[1])), current[3]))
            current = None
        else:  # broken: the call's whole span is text
            add_text(text[current[2]:ev[1]])
            current = None
    normal: List[str] = []
    calls: List[ToolCall] = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, tuple):
            calls.append(piece[0])
            continue
        prev = pieces[i - 1] if i else None
        nxt = pieces[i + 1] if i + 1 < len(pieces) else None
        if isinstance(prev, tuple) and (nxt is None or isinstance(nxt, tuple)) \
                and _separator_re(prev[1]).fullmatch(piece):
            continue
        normal.append(piece)
    return "".join(normal), calls


# ---- streaming ---------------------------------------------------------------------------------------
class StreamingToolParser:
    """Feed the output's text deltas; get ContentDelta / CallBegin / ArgumentsDelta items back."""

    def __init__(self, fmt: Optional[ToolFormat], tool_names: Collection[str]):
        self._scanner = _Scanner(fmt, tool_names, strict=False)
        self._count = 0  # calls begun
        self._separator = ""  # that of the current / last call
        self._after_call = False  # a call ended and no normal text came since
        self._pending = ""  # text after a call that is dropped if a call or the end comes next

    def feed(self, delta: str) -> List[StreamItem]:
        return self._convert(self._scanner.feed(delta))

    def finish(self) -> List[StreamItem]:
        """The end of the text: what was held back is decided and flushed."""
        out = self._convert(self._scanner.finish())
        self._pending = ""  # a separator stretch after the last call is dropped
        return out

    def _convert(self, events: list) -> List[StreamItem]:
        out: List[StreamItem] = []
        for ev in events:
            kind = ev[0]
            if kind == "text":
                s = ev[1]
                if self._after_call:
                    s = self._pending + s
                    if _separator_re(self._separator).fullmatch(s):
                        self._pending = s
                        continue
                    self._after_call, self._pending = False, ""
                if out and isinstance(out[-1], ContentDelta):
                    out[-1] = ContentDelta(out[-1].text + s)
                elif s:
                    out.append(ContentDelta(s))
            elif kind == "begin":
                self._after_call, self._pending = False, ""
                self._separator = ev[3]
                out.append(CallBegin(self._count, ev[1]))
                self._count += 1
            elif kind == "args":
                if not ev[1]:
                    continue
                if out and isinstance(out[-1], ArgumentsDelta):
                    out[-1] = ArgumentsDelta(out[-1].index, out[-1].text + ev[1])
                else:
                    out.append(ArgumentsDelta(self._count - 1, ev[1]))
            else:  # end, or broken (the stream has reported the call; see the module docstring)
                self._after_call, self._pending = True, ""
        return out
