"""Tool formats, their constraints and the prompt: the regex a constrained call is generated under
accepts exactly what the parser reads back, for every format."""

from __future__ import annotations

import json
import re

import pytest

from sgl.runtime.constrained.json_schema import json_schema_to_regex
from sgl.runtime.constrained.structural_tag import parse_structural_tag
from sgl.runtime.function_call.formats import (
    FORMATS,
    call_regex,
    chosen_tools,
    format_for_template,
    parse_tools,
    structural_tag,
)
from sgl.runtime.function_call.parsers import parse_tool_calls
from sgl.runtime.function_call.prompt import prepare_messages, template_uses_tools, tools_block

TOOLS = parse_tools([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "ping"}},  # no parameters: an empty object
])
CALLS = [("get_weather", json.dumps({"city": "Paris", "days": 3})), ("ping", "{}")]
QWEN_LIKE = ("{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n"
             "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
             "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}")


def _schema_regex(schema):
    return json_schema_to_regex(json.dumps(schema))


@pytest.mark.parametrize("name", list(FORMATS))
def test_constrained_calls_parse_back(name):
    fmt = FORMATS[name]
    regex = call_regex(fmt, TOOLS, _schema_regex)
    for calls in (CALLS[:1], CALLS[1:], CALLS):
        text = fmt.calls_text(calls)
        assert re.fullmatch(regex, text), (name, text)
        normal, parsed = parse_tool_calls(text, fmt, [t.name for t in TOOLS])
        assert normal.strip() == "" and [(c.name, json.loads(c.arguments)) for c in parsed] == \
            [(n, json.loads(a)) for n, a in calls]
    one = call_regex(fmt, TOOLS, _schema_regex, parallel=False)
    assert re.fullmatch(one, fmt.calls_text(CALLS[:1])) and not re.fullmatch(one, fmt.calls_text(CALLS))
    # arguments that break the schema are outside the regex
    assert not re.fullmatch(regex, fmt.calls_text([("get_weather", '{"days": 3}')]))


@pytest.mark.parametrize("name", list(FORMATS))
def test_structural_tags_are_valid_and_open_at_the_trigger(name):
    fmt = FORMATS[name]
    tag = parse_structural_tag(json.dumps(structural_tag(fmt, TOOLS)))
    assert tag.triggers == (fmt.trigger,)
    (trigger, regex), = tag.trigger_regexes(lambda s: json_schema_to_regex(s)).items()
    assert re.fullmatch(regex, fmt.calls_text(CALLS[:1]))  # one call: one span
    # Mistral's span is the whole array of calls; the others' spans are one call each
    assert bool(re.fullmatch(regex, fmt.calls_text(CALLS))) == fmt.array


def test_tool_choice_modes():
    assert chosen_tools(TOOLS, "auto")[0] == "auto" and chosen_tools(TOOLS, None)[0] == "auto"
    assert chosen_tools(TOOLS, "required") == ("required", TOOLS)
    mode, allowed = chosen_tools(TOOLS, {"type": "function", "function": {"name": "ping"}})
    assert mode == "named" and [t.name for t in allowed] == ["ping"]
    for bad in ("sometimes", {"type": "function", "function": {"name": "nope"}}, {"function": 3}):
        with pytest.raises(ValueError, match="tool_choice"):
            chosen_tools(TOOLS, bad)


@pytest.mark.parametrize("tools, words", [
    ([], "non-empty"),
    ([{"type": "code_interpreter"}], "type 'function'"),
    ([{"type": "function", "function": {"name": "a b"}}], "name"),
    ([{"type": "function", "function": {"name": "f", "parameters": []}}], "parameters"),
    ([{"type": "function", "function": {"name": "f"}}] * 2, "unique"),
])
def test_malformed_tools(tools, words):
    with pytest.raises(ValueError, match=words):
        parse_tools(tools)


def test_format_read_from_the_template():
    assert format_for_template(None, False).name == "qwen25"
    assert format_for_template("{{ tools }} [TOOL_CALLS]", True).name == "mistral"
    assert format_for_template("{{ tools }} <|python_tag|> <|eot_id|>", True).name == "llama3"
    assert format_for_template(QWEN_LIKE + "<tool_call>", True).name == "qwen25"


def test_template_with_tools_renders_them(tokenizer):
    from sgl.runtime.server.chat_templates import ChatTemplate, render_chat

    assert template_uses_tools(QWEN_LIKE) and not template_uses_tools(tokenizer.chat_template)
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
               {"role": "tool", "content": "sunny", "tool_call_id": "c"}]
    messages, template_tools = prepare_messages(history, TOOLS, FORMATS["qwen25"], True)
    assert template_tools == [t.openai() for t in TOOLS]
    # the template gets the arguments as an object, as HF templates expect
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome"}
    text = render_chat(ChatTemplate(QWEN_LIKE), tokenizer, messages, template_tools)
    assert '"name": "get_weather"' in text and '"arguments": {"city": "Rome"}}</tool_call>' in text


def test_template_without_tools_gets_the_default_block():
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": "Checking.", "tool_calls": [
                   {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}]
    fmt = FORMATS["qwen25"]
    messages, template_tools = prepare_messages(history, TOOLS, fmt, False)
    assert template_tools is None
    assert messages[0]["content"].startswith("Be brief.\n\n") and tools_block(TOOLS, fmt) in messages[0]["content"]
    assert messages[2]["content"] == 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    assert "tool_calls" not in messages[2]
    # no system message: one is added
    messages, _ = prepare_messages(history[1:], TOOLS, fmt, False)
    assert messages[0]["role"] == "system" and '"name": "ping"' in messages[0]["content"]
