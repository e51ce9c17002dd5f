"""Function calling over the OpenAI API, with the official client, on the default model.

The default model (SmolLM2-135M) was not trained to call tools: its chat template has no `tools`
variable, so the server adds its default tools block and reads calls in the qwen25 form. With
`tool_choice` required or named the output is constrained, so every call parses and its
arguments validate against the function's schema, whatever the model samples.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "maxLength": 30},
                           "top_k": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["query"],
        },
    },
}
TOOLS = [WEATHER, SEARCH]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What's the weather like in Paris today?"}]
SAMPLES = 50


def _check_calls(calls, names=None):
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in (names or SCHEMAS)
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def _stream_calls(chunks):
    """(content, {index: (id, name, arguments)}, finish_reason) from streamed chunks."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            cid, name, args = calls.get(tc.index, (None, None, ""))
            if tc.id:
                assert cid is None, "a call's id is sent once"
                cid, name = tc.id, tc.function.name
            calls[tc.index] = (cid, name, args + (tc.function.arguments or ""))
        finish = choice.finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("choice", ["named", "required"])
def test_constrained_calls_validate_on_50_seeded_samples(openai_client, model_name, choice):
    tool_choice = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else "required"
    names = ["get_weather"] if choice == "named" else None
    # n choices with one seed: each choice gets its own seed, so the samples differ. A named
    # function is called once; required calls one function unless parallel calls are allowed
    # (a 135M model at temperature 1 may then go on calling until max_tokens).
    r = openai_client.chat.completions.create(model=model_name, messages=ASK, tools=TOOLS, tool_choice=tool_choice,
                                              temperature=1.0, seed=7, n=SAMPLES, max_tokens=120,
                                              parallel_tool_calls=False)
    assert len(r.choices) == SAMPLES
    for c in r.choices:
        assert c.finish_reason == "tool_calls", c.message
        assert len(c.message.tool_calls) == 1
        _check_calls(c.message.tool_calls, names)
        assert c.message.content is None
    distinct = {json.dumps([(t.function.name, t.function.arguments) for t in c.message.tool_calls]) for c in r.choices}
    assert len(distinct) > 5


@pytest.mark.parametrize("choice", ["named", "required"])
def test_constrained_calls_validate_streamed(openai_client, model_name, choice):
    tool_choice = {"type": "function", "function": {"name": "web_search"}} if choice == "named" else "required"

    def one(seed):
        return _stream_calls(openai_client.chat.completions.create(
            model=model_name, messages=ASK, tools=TOOLS, tool_choice=tool_choice, temperature=1.0, seed=seed,
            max_tokens=120, stream=True, parallel_tool_calls=False))

    with ThreadPoolExecutor(SAMPLES) as pool:  # concurrent streams decode as one batch
        results = list(pool.map(one, range(SAMPLES)))
    for content, calls, finish in results:
        assert finish == "tool_calls" and content == ""
        assert calls and sorted(calls) == list(range(len(calls)))
        for cid, name, args in calls.values():
            assert cid.startswith("call_") and name in SCHEMAS
            if choice == "named":
                assert name == "web_search"
            jsonschema.validate(json.loads(args), SCHEMAS[name])


def test_required_with_parallel_calls(openai_client, model_name):
    r = openai_client.chat.completions.create(model=model_name, messages=ASK, tools=TOOLS, tool_choice="required",
                                              temperature=1.0, seed=11, n=6, max_tokens=160)
    for c in r.choices:
        # every complete call validates; a call cut by max_tokens stays text
        _check_calls(c.message.tool_calls)
        assert c.finish_reason == ("tool_calls" if c.message.content is None else "length")


def test_stream_equals_non_stream(openai_client, model_name):
    kw = dict(model=model_name, messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=3,
              max_tokens=120, parallel_tool_calls=False)
    full = openai_client.chat.completions.create(**kw)
    content, calls, finish = _stream_calls(openai_client.chat.completions.create(**kw, stream=True))
    want = [(t.function.name, t.function.arguments) for t in full.choices[0].message.tool_calls]
    assert [(name, args) for _, name, args in (calls[i] for i in sorted(calls))] == want
    assert finish == full.choices[0].finish_reason == "tool_calls"


def test_two_turn_exchange_with_tool_result(openai_client, model_name):
    first = openai_client.chat.completions.create(
        model=model_name, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=100)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    second = openai_client.chat.completions.create(model=model_name, messages=messages, tools=TOOLS,
                                                   temperature=0, max_tokens=40)
    choice = second.choices[0]
    if choice.message.tool_calls:
        _check_calls(choice.message.tool_calls)
    else:
        assert choice.message.content
    # the same tools block, plus the call (written in the served format) and its result
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 20
    plain = openai_client.chat.completions.create(model=model_name, messages=messages, tools=TOOLS,
                                                  tool_choice="none", temperature=0, max_tokens=20)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content


def test_auto_answers_in_text_or_a_valid_call(openai_client, model_name):
    r = openai_client.chat.completions.create(model=model_name, messages=ASK, tools=TOOLS, temperature=1.0, seed=1,
                                              n=4, max_tokens=60)
    for c in r.choices:
        if c.message.tool_calls:
            assert c.finish_reason == "tool_calls"
            _check_calls(c.message.tool_calls)
        else:
            assert c.message.content is not None


HISTORY = ASK + [
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sky": "sunny"})},
    {"role": "assistant", "content": "It is sunny in Paris."},
    {"role": "user", "content": "What's the weather in Rome?"},
]


def test_auto_constrains_a_call_once_it_begins(openai_client, model_name):
    # After one call in the history, the model opens another. Unconstrained, this model writes
    # '<tool_call>\n{"sky": "sunny"}' here (greedy); with tool_choice auto the call, once begun,
    # must be a valid call, and text without a call stays free.
    greedy = openai_client.chat.completions.create(model=model_name, messages=HISTORY, tools=TOOLS, temperature=0,
                                                   max_tokens=80).choices[0]
    assert greedy.finish_reason == "tool_calls" and greedy.message.tool_calls, greedy.message
    sampled = openai_client.chat.completions.create(model=model_name, messages=HISTORY, tools=TOOLS,
                                                    temperature=1.0, seed=2, n=4, max_tokens=80).choices
    for c in [greedy, *sampled]:
        if c.message.tool_calls:
            _check_calls(c.message.tool_calls)
        if c.finish_reason != "length":  # a call cut by max_tokens is left as text
            assert "<tool_call>" not in (c.message.content or ""), c.message.content


def test_bad_tools_are_400(openai_client, model_name):
    cases = [
        (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools"),
        (dict(tools=[{"type": "retrieval"}]), "tools"),
        (dict(tools=[WEATHER, WEATHER]), "tools"),
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "tool_choice"),
    ]
    for kw, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            openai_client.chat.completions.create(model=model_name, messages=ASK, max_tokens=4, **kw)
        assert e.value.body["param"] == param, (kw, e.value.body)


def test_structural_tag_on_generate_and_response_format(openai_client, model_name, server):
    tag = {"structures": [{"begin": " Paris", "schema": {"type": "integer", "minimum": 100, "maximum": 999},
                           "end": "!"}], "triggers": [" Paris"]}
    r = server.post("/generate", json={"text": "The capital of France is", "sampling_params": {
        "max_new_tokens": 12, "temperature": 0, "structural_tag": tag}})
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert text.startswith(" Paris") and text[6:10].rstrip("!").isdigit() and "!" in text, text
    chat = openai_client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Complete: The capital of France is"}],
        max_tokens=30, temperature=0, response_format={"type": "structural_tag", **tag})
    assert chat.choices[0].message.content is not None
    bad = server.post("/generate", json={"text": "x", "sampling_params": {
        "structural_tag": {"structures": [{"begin": "a", "schema": {}, "end": ""}], "triggers": ["b"]}}})
    assert bad.status_code == 400 and "structural_tag" in bad.text


def test_function_call_route_parses_text(server):
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}\n</tool_call>'
    for route in ("/function_call", "/parse_function_call"):
        r = server.post(route, json={"text": text, "tools": TOOLS, "tool_call_parser": "qwen25"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["normal_text"].strip() == "Sure."
        assert body["calls"] == [{"tool_index": 0, "name": "get_weather",
                                  "parameters": '{"city": "Rome", "unit": "celsius"}'}]
    bad = server.post("/function_call", json={"text": text, "tools": TOOLS, "tool_call_parser": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tool_call_parser"
