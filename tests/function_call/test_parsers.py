"""Tool calls parsed out of generated text, whole and streamed (sgl.runtime.function_call.parsers).

Every case's text is also streamed under many chunkings (sizes 1, 2, 3, 7 and 50 seeded random
ones) and must give exactly what the whole-text parser gives."""

from __future__ import annotations

import random

import pytest

from sgl.runtime.function_call.formats import FORMATS
from sgl.runtime.function_call.parsers import (ArgumentsDelta, CallBegin, ContentDelta, StreamingToolParser,
                                                ToolCall, parse_tool_calls)

TOOLS = ["get_weather", "search", "add"]

WEATHER = '{"city": "Paris", "unit": "celsius"}'
SEARCH = '{"query": "sgl"}'
# Strings with escaped quotes, braces, closing tags and begin markers, non-ASCII text, deep nesting.
NESTED = (r'{"query": "a \" } { ] [ </tool_call> [TOOL_CALLS] <|python_tag|> {\"name\": \"add\"}", '
          r'"filters": {"lang": ["en", "fr"], "deep": {"k": [1, {"z": null}], "s": "}}}"}}, '
          r'"emoji": "héllo 🌍 日本", "esc": "\u00e9\n\\", "n": -1.5e3}')
ENCODED = r'"{\"city\": \"Paris\"}"'  # the arguments object as a JSON string
ENCODED_INNER = '{"city": "Paris"}'
PROSE = "The weather is {mild} today; see [1] and <b>this</b> or a \\ \"quote\"."


def q(name, args):
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def obj(name, args, key="arguments"):
    return f'{{"name": "{name}", "{key}": {args}}}'


# (format, text, normal_text, [(name, arguments)])
CASES = [
    # ---- qwen25 ----
    ("qwen25", q("get_weather", WEATHER), "", [("get_weather", WEATHER)]),
    ("qwen25", q("get_weather", WEATHER) + "\n" + q("search", SEARCH), "",
     [("get_weather", WEATHER), ("search", SEARCH)]),
    ("qwen25", "Let me check.\n\n" + q("get_weather", WEATHER) + "\n",
     "Let me check.\n\n", [("get_weather", WEATHER)]),
    ("qwen25", q("search", NESTED), "", [("search", NESTED)]),
    ("qwen25", q("launch_rockets", WEATHER), q("launch_rockets", WEATHER), []),
    ("qwen25", '<tool_call>\n{"name": "get_weather" "arguments": {}}\n</tool_call>',  # no comma
     '<tool_call>\n{"name": "get_weather" "arguments": {}}\n</tool_call>', []),
    ("qwen25", "<tool_call>\nI cannot call tools here.", "<tool_call>\nI cannot call tools here.", []),
    ("qwen25", PROSE, PROSE, []),
    ("qwen25", q("get_weather", ENCODED), "", [("get_weather", ENCODED_INNER)]),
    # the closing tag is optional; text after the last call is kept; whitespace between calls dropped
    ("qwen25", '<tool_call>{"name": "add", "arguments": {"a": 1}}', "", [("add", '{"a": 1}')]),
    ("qwen25", q("add", '{"a": 1}') + "\n\n \t" + q("search", SEARCH) + "\nDone.",
     "\nDone.", [("add", '{"a": 1}'), ("search", SEARCH)]),
    ("qwen25", q("add", '{"a": 1}') + "\nand then\n" + q("search", SEARCH) + "  \n",
     "\nand then\n", [("add", '{"a": 1}'), ("search", SEARCH)]),
    # the arguments key first; the alternative key; an extra key; a valid call between failed ones
    ("qwen25", '<tool_call>{"arguments": {"a": 2}, "name": "add"}</tool_call>', "", [("add", '{"a": 2}')]),
    ("qwen25", '<tool_call>{"name": "add", "parameters": {"a": 2}}</tool_call>', "", [("add", '{"a": 2}')]),
    ("qwen25", '<tool_call>{"name": "add", "id": 1, "arguments": {}}</tool_call>',
     '<tool_call>{"name": "add", "id": 1, "arguments": {}}</tool_call>', []),
    ("qwen25", '<tool_call><tool_call>{"name": "add", "arguments": {}}</tool_call> <tool_', "<tool_call> <tool_",
     [("add", "{}")]),
    ("qwen25", '<tool_call>{"arguments": {"a": 1,}, "name": "add"}</tool_call>',  # bad JSON, held: text
     '<tool_call>{"arguments": {"a": 1,}, "name": "add"}</tool_call>', []),
    ("qwen25", '<tool_call>{"name": "add", "arguments": "[1, 2]"}</tool_call>',  # a string, not an object
     '<tool_call>{"name": "add", "arguments": "[1, 2]"}</tool_call>', []),
    ("qwen25", '<tool_call>{"name": "add", "arguments": [1]}</tool_call>',
     '<tool_call>{"name": "add", "arguments": [1]}</tool_call>', []),
    ("qwen25", '<tool_call>{"arguments": {"a": NaN}, "name": "add"}</tool_call>',
     '<tool_call>{"arguments": {"a": NaN}, "name": "add"}</tool_call>', []),
    ("qwen25", "   ", "   ", []),
    ("qwen25", "", "", []),
    # ---- mistral ----
    ("mistral", "[TOOL_CALLS] [" + obj("get_weather", WEATHER) + "]", "", [("get_weather", WEATHER)]),
    ("mistral", "[TOOL_CALLS] [" + obj("get_weather", WEATHER) + ", " + obj("search", SEARCH) + "]", "",
     [("get_weather", WEATHER), ("search", SEARCH)]),
    ("mistral", "Sure.\n[TOOL_CALLS][" + obj("add", '{"a": 1}') + "]", "Sure.\n", [("add", '{"a": 1}')]),
    ("mistral", "[TOOL_CALLS] [" + obj("search", NESTED) + "]", "", [("search", NESTED)]),
    ("mistral", "[TOOL_CALLS] [" + obj("nope", "{}") + "]", "[TOOL_CALLS] [" + obj("nope", "{}") + "]", []),
    ("mistral", '[TOOL_CALLS] [{"name": "add": {}}]', '[TOOL_CALLS] [{"name": "add": {}}]', []),
    ("mistral", "[TOOL_CALLS] I will look that up.", "[TOOL_CALLS] I will look that up.", []),
    ("mistral", PROSE, PROSE, []),
    ("mistral", "[TOOL_CALLS] [" + obj("get_weather", ENCODED) + "]", "", [("get_weather", ENCODED_INNER)]),
    ("mistral", "[TOOL_CALLS] " + obj("add", '{"a": 1}'), "", [("add", '{"a": 1}')]),
    ("mistral", "[TOOL_CALLS] [" + obj("add", "{}") + "] ok", " ok", [("add", "{}")]),
    ("mistral", "[TOOL_CALLS] [" + obj("add", "{}") + ", 42]", ", 42]", [("add", "{}")]),
    ("mistral", "[TOOL_CALLS] []", "[TOOL_CALLS] []", []),
    ("mistral", "[TOOL_CALL] [" + obj("add", "{}") + "]", "[TOOL_CALL] [" + obj("add", "{}") + "]", []),
    # ---- llama3 ----
    ("llama3", obj("get_weather", WEATHER, "parameters"), "", [("get_weather", WEATHER)]),
    ("llama3", "<|python_tag|>" + obj("get_weather", WEATHER, "parameters") + "; "
     + obj("search", SEARCH, "parameters"), "", [("get_weather", WEATHER), ("search", SEARCH)]),
    ("llama3", obj("add", '{"a": 1}', "parameters") + ";\n" + obj("add", '{"a": 2}', "parameters") + ";",
     "", [("add", '{"a": 1}'), ("add", '{"a": 2}')]),
    ("llama3", "Calling it now: " + obj("add", '{"a": 1}', "parameters"), "Calling it now: ", [("add", '{"a": 1}')]),
    ("llama3", obj("search", NESTED, "parameters"), "", [("search", NESTED)]),
    ("llama3", obj("nope", "{}", "parameters"), obj("nope", "{}", "parameters"), []),
    ("llama3", '{"name": get_weather, "parameters": {}}', '{"name": get_weather, "parameters": {}}', []),
    ("llama3", "<|python_tag|>print('hi')", "<|python_tag|>print('hi')", []),
    ("llama3", '{"name": "Bob", "age": 3} is a person', '{"name": "Bob", "age": 3} is a person', []),
    ("llama3", PROSE, PROSE, []),
    ("llama3", obj("get_weather", ENCODED, "parameters"), "", [("get_weather", ENCODED_INNER)]),
    ("llama3", obj("add", '{"a": 1}', "arguments"), "", [("add", '{"a": 1}')]),
    ("llama3", obj("add", "{}", "parameters") + "; and more", "; and more", [("add", "{}")]),
    ("llama3", '{"foo": ' + obj("add", "{}", "parameters") + "}", '{"foo": }', [("add", "{}")]),
    # ---- json ----
    ("json", obj("get_weather", WEATHER), "", [("get_weather", WEATHER)]),
    ("json", obj("get_weather", WEATHER) + "\n" + obj("search", SEARCH), "",
     [("get_weather", WEATHER), ("search", SEARCH)]),
    ("json", "  [" + obj("get_weather", WEATHER) + ",\n " + obj("search", SEARCH) + "]\n", "  ",
     [("get_weather", WEATHER), ("search", SEARCH)]),
    ("json", "Here you go:\n" + obj("add", '{"a": 1}'), "Here you go:\n", [("add", '{"a": 1}')]),
    ("json", obj("search", NESTED), "", [("search", NESTED)]),
    ("json", obj("nope", '{"x": ' + obj("add", "{}") + "}"), obj("nope", '{"x": ' + obj("add", "{}") + "}"), []),
    ("json", '{"name": "add" , , "arguments": {}}', '{"name": "add" , , "arguments": {}}', []),
    ("json", '{"name": "Bob"} said hi', '{"name": "Bob"} said hi', []),
    ("json", PROSE, PROSE, []),
    ("json", obj("get_weather", ENCODED), "", [("get_weather", ENCODED_INNER)]),
    ("json", obj("add", '{"a": 1}', "parameters"), "", [("add", '{"a": 1}')]),
    ("json", "[1, 2] " + obj("add", "{}"), "[1, 2] ", [("add", "{}")]),
    ("json", "x [" + obj("add", "{}") + "]", "x []", [("add", "{}")]),
    ("json", obj("add", "{}") + ";" + obj("add", "{}"), ";", [("add", "{}"), ("add", "{}")]),
    ("json", '{"arguments": ' + ENCODED + ', "name": "get_weather"}', "", [("get_weather", ENCODED_INNER)]),
    ("json", '{"n\\u0061me": "add", "arguments": {}}', "", [("add", "{}")]),
]


def _id(case):
    return f"{case[0]}:{case[1][:40]!r}"


# ---- helpers -------------------------------------------------------------------------------------
def stream(text, fmt, chunks, names=TOOLS):
    parser = StreamingToolParser(fmt, names)
    items = []
    for chunk in chunks:
        items += parser.feed(chunk)
    items += parser.finish()
    return collect(items)


def collect(items):
    content, calls = [], []
    for item in items:
        if isinstance(item, ContentDelta):
            content.append(item.text)
        elif isinstance(item, CallBegin):
            assert item.index == len(calls)
            calls.append(ToolCall(item.name, ""))
        else:
            assert isinstance(item, ArgumentsDelta)
            assert item.index == len(calls) - 1, "arguments must follow their CallBegin"
            calls[-1].arguments += item.text
    return "".join(content), calls


def chunkings(text):
    for size in (1, 2, 3, 7):
        yield [text[i:i + size] for i in range(0, len(text), size)]
    rng = random.Random(len(text) * 7919 + sum(map(ord, text[:50])))
    for _ in range(50):
        cuts, i = [], 0
        while i < len(text):
            n = rng.randint(1, 9)
            cuts.append(text[i:i + n])
            i += n
        yield cuts


def assert_invariant(text, fmt, names=TOOLS):
    whole = parse_tool_calls(text, fmt, names)
    for chunks in chunkings(text):
        assert stream(text, fmt, chunks, names) == whole, chunks
    return whole


# ---- whole text ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_parse(case):
    fmt, text, normal, calls = case
    assert parse_tool_calls(text, FORMATS[fmt], TOOLS) == (normal, [ToolCall(n, a) for n, a in calls])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_stream_matches_parse(case):
    fmt, text, normal, calls = case
    assert assert_invariant(text, FORMATS[fmt]) == (normal, [ToolCall(n, a) for n, a in calls])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_stream_matches_parse_without_a_format(case):
    assert_invariant(case[1], None)


# Without a format, a bare object is a call anywhere and ";" may separate bare calls.
READ_DIFFERENTLY_WITHOUT_A_FORMAT = {
    "[TOOL_CALL] [" + obj("add", "{}") + "]": ("[TOOL_CALL] []", [("add", "{}")]),
    obj("add", "{}") + ";" + obj("add", "{}"): ("", [("add", "{}"), ("add", "{}")]),
}


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_no_format_recognises_every_format(case):
    fmt, text, normal, calls = case
    normal, calls = READ_DIFFERENTLY_WITHOUT_A_FORMAT.get(text, (normal, calls))
    assert parse_tool_calls(text, None, TOOLS) == (normal, [ToolCall(n, a) for n, a in calls])


def test_no_format_reads_a_bare_object_after_a_failed_tag():
    text = '<tool_call>\nI think {"name": "add", "arguments": {}}</tool_call>'
    assert parse_tool_calls(text, FORMATS["qwen25"], TOOLS) == (text, [])
    assert assert_invariant(text, None) == ("<tool_call>\nI think </tool_call>", [ToolCall("add", "{}")])


def test_formats_own_call_text_round_trips():
    calls = [("get_weather", WEATHER), ("search", NESTED), ("add", "{}")]
    for fmt in FORMATS.values():
        text = fmt.calls_text(calls)
        expected = ("", [ToolCall(n, a) for n, a in calls])
        assert assert_invariant(text, fmt) == expected, fmt.name
        assert parse_tool_calls(text, None, TOOLS) == expected, fmt.name


def test_unknown_names_depend_on_tool_names():
    text = q("add", '{"a": 1}')
    assert parse_tool_calls(text, FORMATS["qwen25"], ["search"]) == (text, [])
    assert parse_tool_calls(text, FORMATS["qwen25"], []) == (text, [])
    assert_invariant(text, FORMATS["qwen25"], ["search"])


def test_whitespace_rule():
    fmt = FORMATS["qwen25"]
    a = q("add", "{}")
    # before the first call: kept; between calls and after the last: dropped when whitespace only
    assert parse_tool_calls(" \n" + a + " \n " + a + "\n\n", fmt, TOOLS)[0] == " \n"
    assert parse_tool_calls("x" + a + " y " + a, fmt, TOOLS)[0] == "x y "
    # a llama3 ";" separator goes with the whitespace, and only after a call
    l3 = FORMATS["llama3"]
    assert parse_tool_calls("; " + obj("add", "{}", "parameters") + " ; ", l3, TOOLS)[0] == "; "
    assert parse_tool_calls(obj("add", "{}", "parameters") + " ;; ", l3, TOOLS)[0] == " ;; "


# ---- streaming specifics -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [None, *FORMATS])
def test_text_without_a_call_streams_at_once(fmt):
    fmt = FORMATS[fmt] if fmt else None
    parser = StreamingToolParser(fmt, TOOLS)
    for chunk in ["Hello", " there,", " how is", " the weather", " today?"]:
        assert parser.feed(chunk) == [ContentDelta(chunk)]
    assert parser.finish() == []


@pytest.mark.parametrize("fmt", ["llama3", "json", None])
def test_a_brace_is_held_only_until_it_cannot_be_a_call(fmt):
    parser = StreamingToolParser(FORMATS[fmt] if fmt else None, TOOLS)
    assert parser.feed("a set {") == [ContentDelta("a set ")]
    assert parser.feed("x") == [ContentDelta("{x")]
    assert parser.feed('} and {"na') == [ContentDelta("} and ")]
    assert parser.feed('mely": 1}') == [ContentDelta('{"namely": 1}')]


def test_a_partial_marker_is_held():
    parser = StreamingToolParser(FORMATS["qwen25"], TOOLS)
    assert parser.feed("Hi <tool_") == [ContentDelta("Hi ")]
    assert parser.feed("ca") == []
    assert parser.feed("t") == [ContentDelta("<tool_cat")]
    assert parser.feed(" <tool_") == [ContentDelta(" ")]
    assert parser.finish() == [ContentDelta("<tool_")]


BEGUN = {  # the text up to the middle of the first call's arguments
    "qwen25": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
    "mistral": '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Pa',
    "llama3": '<|python_tag|>{"name" : "get_weather" ,\n"parameters":{"city": "Pa',
    "json": '{ "name": "get_weather", "arguments":  {"city": "Pa',
}


@pytest.mark.parametrize("fmt", list(BEGUN))
@pytest.mark.parametrize("no_format", [False, True])
def test_call_begins_before_its_object_is_complete(fmt, no_format):
    parser = StreamingToolParser(None if no_format else FORMATS[fmt], TOOLS)
    items = []
    for ch in BEGUN[fmt]:
        items += parser.feed(ch)
    assert collect(items) == ("", [ToolCall("get_weather", '{"city": "Pa')])
    prefix = BEGUN[fmt][:BEGUN[fmt].index('{"city"')]
    parser = StreamingToolParser(None if no_format else FORMATS[fmt], TOOLS)
    assert parser.feed(prefix) == []  # the arguments value has not begun
    assert parser.feed("{") == [CallBegin(0, "get_weather"), ArgumentsDelta(0, "{")]
    assert parser.feed('"a": "}') == [ArgumentsDelta(0, '"a": "}')]
    assert parser.feed('"}') == [ArgumentsDelta(0, '"}')]  # the arguments end here ...
    assert parser.feed("}") == []  # ... not at the call object's brace


def test_cuts_inside_markers_and_escapes():
    text = "ok <|python_tag|>" + obj("search", r'{"q": "a \" } {"}', "parameters")
    expected = ("ok ", [ToolCall("search", r'{"q": "a \" } {"}')])
    cuts = ["ok <|python_", "tag|>", '{"name": "search", "parameters": {"q": "a \\', '" } {"}}']
    assert stream(text, None, cuts) == expected == parse_tool_calls(text, FORMATS["llama3"], TOOLS)
    text = "<tool_call>" + obj("add", "{}") + "</tool_call>"
    cuts = ["<tool_", "call>", obj("add", "{}") + "</tool_", "call>"]
    assert stream(text, None, cuts) == ("", [ToolCall("add", "{}")])
    text = "[TOOL_CALLS] [" + obj("add", "{}") + "]"
    assert stream(text, None, ["[TOOL_", "CALLS] [", obj("add", "{}")[:-1], "}]"]) == ("", [ToolCall("add", "{}")])


def test_held_calls_come_out_whole():
    parser = StreamingToolParser(FORMATS["qwen25"], TOOLS)
    assert parser.feed('<tool_call>{"arguments": {"a": 1}, ') == []
    assert parser.feed('"name": "add"}') == [CallBegin(0, "add"), ArgumentsDelta(0, '{"a": 1}')]
    assert parser.feed("</tool_call>") == []
    assert parser.finish() == []


def test_feed_after_finish_is_an_error():
    parser = StreamingToolParser(FORMATS["json"], TOOLS)
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")


def test_a_long_stream_is_linear():
    # A call with big arguments fed one character at a time, then plenty of plain text.
    args = "{" + ", ".join(f'"k{i}": "v{i} }}{{"' for i in range(3000)) + "}"
    text = "<tool_call>" + obj("search", args) + "</tool_call>" + "plain text. " * 3000
    parser = StreamingToolParser(FORMATS["qwen25"], TOOLS)
    items = []
    for ch in text:
        items += parser.feed(ch)
    items += parser.finish()
    assert collect(items) == ("plain text. " * 3000, [ToolCall("search", args)])
    assert len(parser._scanner._buf) < 10000  # what was streamed is not kept


# ---- the documented exception: a begun call that turns out not to be one --------------------------
@pytest.mark.parametrize("text, args", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', '{"city": "Par'),  # max tokens
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}', '{"city": "Paris"}'),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris",}}</tool_call>', '{"city": "Paris",}'),
])
def test_a_cut_off_or_broken_call_streams_but_does_not_parse(text, args):
    """Streaming has sent CallBegin and the arguments so far; the whole-text parser keeps the span
    as normal text."""
    assert parse_tool_calls(text, FORMATS["qwen25"], TOOLS) == (text, [])
    for chunks in [[text], list(text)]:
        assert stream(text, FORMATS["qwen25"], chunks) == ("", [ToolCall("get_weather", args)])


def test_an_extra_key_after_the_arguments():
    text = 'a {"name": "add", "arguments": {"x": 1}, "id": 7} b'
    assert parse_tool_calls(text, FORMATS["json"], TOOLS) == (text, [])
    # the stream reported the call; it goes on from the offending "," as normal text
    assert stream(text, FORMATS["json"], list(text)) == ('a , "id": 7} b', [ToolCall("add", '{"x": 1}')])


# ---- random texts ----------------------------------------------------------------------------------
FRAGMENTS = ["<tool_call>", "</tool_call>", "<tool_", "[TOOL_CALLS]", "[TOOL_", "<|python_tag|>", "<|python",
             "{", "}", "[", "]", ",", ";", ":", '"', "\\", " ", "\n", "x", "hello ", "é🌍", "NaN",
             obj("add", "{}"), obj("add", r'{"a": "}{\""}', "parameters"), obj("nope", "{}"),
             '{"arguments": {"b": [1]}, "name": "search"}', obj("add", ENCODED), '{"name": "add"',
             ', "arguments": ', '{"a": 1}', '"name"', '"add"', obj("add", '{"a": 1,}'),
             '{"name": "add", "arguments": {"z": 1}, "x": 2}']


@pytest.mark.parametrize("fmt", [None, *FORMATS])
def test_random_texts(fmt):
    """The stream never depends on the chunking; it equals the whole-text result, or it has reported
    more calls (a begun call that then broke: the documented exception)."""
    fmt = FORMATS[fmt] if fmt else None
    rng = random.Random(1234)
    for _ in range(150):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 10)))
        whole = parse_tool_calls(text, fmt, TOOLS)
        streamed = stream(text, fmt, [text])
        for size in (1, rng.randint(2, 6)):
            assert stream(text, fmt, [text[i:i + size] for i in range(0, len(text), size)]) == streamed, text
        assert streamed == whole or len(streamed[1]) > len(whole[1]), text
