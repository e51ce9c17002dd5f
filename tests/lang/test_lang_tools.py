"""Function calling in sgl programs (`gen(tools=...)`, `s.tool_calls`), on both real backends."""

from __future__ import annotations

import json

import jsonschema
import pytest

import sgl

PARAMS = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "b": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": PARAMS}},
         {"type": "function", "function": {"name": "negate", "parameters": {
             "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]


@sgl.function
def ask(s, question, choice):
    s += sgl.system(sgl.tools_prompt(TOOLS))
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("reply", tools=TOOLS, tool_choice=choice, max_tokens=80))


def test_required_and_named_calls_validate(program_backend):
    states = ask.run_batch([{"question": "What is 2 plus 3?", "choice": choice}
                            for choice in ("required", {"type": "function", "function": {"name": "add"}})] * 4,
                           temperature=1.0)
    for i, state in enumerate(states):
        calls = state.tool_calls("reply")
        assert calls, state["reply"]
        for call in calls:
            assert call["id"].startswith("call_") and call["name"] in ("add", "negate")
            if i % 2:
                assert call["name"] == "add"
            if call["name"] == "add":
                jsonschema.validate(json.loads(call["arguments"]), PARAMS)


def test_auto_gives_text_or_valid_calls(program_backend):
    state = ask.run(question="Say hello.", choice="auto", temperature=0)
    for call in state.tool_calls("reply"):
        assert call["name"] in ("add", "negate")
        json.loads(call["arguments"])


def test_tools_prompt_lists_the_tools_and_the_form():
    text = sgl.tools_prompt(TOOLS)
    assert '"name": "add"' in text and "<tool_call>" in text
    assert '"parameters"' in sgl.tools_prompt(TOOLS, tool_parser="llama3")


def test_bad_tool_arguments_are_value_errors():
    with pytest.raises(ValueError, match="tool_choice"):
        sgl.gen("x", tool_choice="required")
    with pytest.raises(ValueError, match="tools"):
        sgl.gen("x", tools=TOOLS, regex="a+")
    with pytest.raises(ValueError, match="tool_choice"):
        sgl.gen("x", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError, match="tool_parser"):
        sgl.gen("x", tools=TOOLS, tool_parser="nope")
    with pytest.raises(ValueError, match="tools"):
        sgl.gen("x", tools=[{"type": "function", "function": {"name": "has space"}}])


def test_tool_calls_of_a_gen_without_tools_is_an_error(fake_backend):
    @sgl.function
    def plain(s):
        s += sgl.gen("x", max_tokens=2)

    with pytest.raises(ValueError, match="not given tools"):
        plain.run().tool_calls("x")
