"""The official `openai` client against the server on the default model."""

from __future__ import annotations

import openai
import pytest

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three colors."}]


def test_completion(openai_client, model_name):
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, temperature=0)
    choice = r.choices[0]
    assert r.object == "text_completion" and choice.text
    assert choice.finish_reason in ("length", "stop")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_default_max_tokens_is_16(openai_client, model_name):
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16
    assert r.choices[0].finish_reason == "length"


def test_completion_stream_matches_non_stream(openai_client, model_name):
    full = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0)
    chunks = list(openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0,
                                                   stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_n2_batch_and_usage(openai_client, model_name):
    prompts = [PROMPT, "1, 2, 3,"]
    r = openai_client.completions.create(model=model_name, prompt=prompts, max_tokens=4, temperature=0, n=2,
                                         extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    single = [openai_client.completions.create(model=model_name, prompt=p, max_tokens=4, temperature=0) for p in prompts]
    # n copies of a prompt are greedy: they agree, and prompt tokens count once per prompt
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in single)
    assert r.usage.completion_tokens == 4 * 4


def test_completion_stop_and_matched_stop(openai_client, model_name):
    r = openai_client.completions.create(model=model_name, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and " 7" not in choice.text
    assert choice.model_extra["matched_stop"] == " 7"
    assert choice.text.startswith(" 5, 6,")


def test_completion_logprobs(openai_client, model_name):
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and len(top) == 3
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)  # greedy: the chosen token is the best


def test_completion_echo_and_token_prompt(openai_client, model_name, server):
    ids = server.post("/generate", json={"text": PROMPT, "sampling_params": {"max_new_tokens": 0}}).json()
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3, temperature=0, echo=True)
    assert r.choices[0].text.startswith(PROMPT) and len(r.choices[0].text) > len(PROMPT)
    assert ids["meta_info"]["prompt_tokens"] == r.usage.prompt_tokens


def test_chat(openai_client, model_name):
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=10, temperature=0)
    msg = r.choices[0].message
    assert r.object == "chat.completion" and msg.role == "assistant" and msg.content
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_stream_role_chunk_first_and_usage(openai_client, model_name):
    full = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=10, temperature=0)
    chunks = list(openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=10, temperature=0,
                                                        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens


def test_chat_n2_usage_counts_prompt_once(openai_client, model_name):
    one = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, temperature=0)
    two = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, temperature=0, n=2)
    assert len(two.choices) == 2 and {c.index for c in two.choices} == {0, 1}
    assert two.usage.prompt_tokens == one.usage.prompt_tokens


def test_chat_stream_n2(openai_client, model_name):
    chunks = list(openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, temperature=0,
                                                        n=2, stream=True))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason is not None


def test_chat_logprobs(openai_client, model_name):
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, temperature=0,
                                              logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_chat_default_temperature_is_0_7(openai_client, model_name, server):
    # Same seed, same prompt: the default must sample exactly like an explicit 0.7 ...
    kw = dict(model=model_name, messages=CHAT, max_tokens=24, seed=7, extra_body={"ignore_eos": True})
    default = openai_client.chat.completions.create(**kw).choices[0].message.content
    explicit = openai_client.chat.completions.create(**kw, temperature=0.7).choices[0].message.content
    assert default == explicit
    # ... and the seed does not hide the temperature (another one samples differently).
    hot = openai_client.chat.completions.create(**kw, temperature=1.9).choices[0].message.content
    assert hot != default


def test_chat_seed_is_deterministic(openai_client, model_name):
    kw = dict(model=model_name, messages=CHAT, max_tokens=12, temperature=1.0, seed=123)
    a = openai_client.chat.completions.create(**kw).choices[0].message.content
    b = openai_client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_chat_continues_trailing_assistant_message(openai_client, model_name, server):
    prefix = "The three colors are red,"
    messages = CHAT + [{"role": "assistant", "content": prefix}]
    r = openai_client.chat.completions.create(model=model_name, messages=messages, max_tokens=6, temperature=0)
    # Same as a raw completion of the template's text ending in the prefix (no end-of-turn).
    template = server.get("/get_model_info").json()["chat_template"]
    assert "<|im_start|>" in template
    raw = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
           "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n" + prefix)
    ids = server.post("/generate", json={"text": raw, "sampling_params": {"max_new_tokens": 0}}).json()
    expected = openai_client.completions.create(model=model_name, prompt=raw, max_tokens=6, temperature=0)
    assert r.choices[0].message.content == expected.choices[0].text
    assert r.usage.prompt_tokens == ids["meta_info"]["prompt_tokens"]


def test_chat_extra_fields(openai_client, model_name):
    r = openai_client.chat.completions.create(
        model=model_name, messages=CHAT, max_tokens=5, temperature=0,
        extra_body={"top_k": 5, "min_p": 0.05, "min_tokens": 5, "repetition_penalty": 1.1, "ignore_eos": True,
                    "stop_token_ids": [2], "no_stop_trim": True, "skip_special_tokens": True})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_bad_requests_raise_bad_request(openai_client, model_name):
    cases = [
        dict(prompt=PROMPT, max_tokens=-1),
        dict(prompt=PROMPT, temperature=-0.5),
        dict(prompt=PROMPT, top_p=0),
        dict(prompt=PROMPT, n=0),
        dict(prompt=PROMPT, extra_body={"regex": "[0-9"}),
        dict(prompt=PROMPT * 3000),
    ]
    for kw in cases:
        with pytest.raises(openai.BadRequestError):
            openai_client.completions.create(model=model_name, **kw)
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "multipleOf": 7}}}
    with pytest.raises(openai.BadRequestError, match="multipleOf"):
        openai_client.chat.completions.create(model=model_name, messages=CHAT, response_format=bad_schema)
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=model_name, messages=[])


def test_models(openai_client, model_name, server):
    models = openai_client.models.list().data
    assert [m.id for m in models] == [model_name] == [server.get("/get_server_info").json()["served_model_name"]]


def test_wrong_api_key_is_401(server):
    import openai as oa

    client = oa.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(oa.AuthenticationError):
        client.models.list()


def test_streamed_logprobs_add_up(openai_client, model_name):
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    full = openai_client.completions.create(**kw).choices[0].logprobs
    tokens, offsets = [], []
    for chunk in openai_client.completions.create(**kw, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            tokens += chunk.choices[0].logprobs.tokens
            offsets += chunk.choices[0].logprobs.text_offset
    assert tokens == full.tokens and offsets == full.text_offset
    chat = dict(model=model_name, messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=1)
    full_chat = openai_client.chat.completions.create(**chat).choices[0].logprobs.content
    streamed = [t for c in openai_client.chat.completions.create(**chat, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in full_chat]


def test_structured_outputs(openai_client, model_name):
    import json
    import re

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, response_format=fmt, max_tokens=64)
    data = json.loads(r.choices[0].message.content)
    assert isinstance(data["city"], str) and data["population"] >= 0
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=256, temperature=0,
                                              response_format={"type": "json_object"})
    content = r.choices[0].message.content
    assert content.startswith("{")
    if r.choices[0].finish_reason == "stop":  # free-form JSON may still be open at max_tokens
        assert isinstance(json.loads(content), dict)
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=16,
                                         extra_body={"regex": "[0-9]{3}-[0-9]{4}"})
    assert re.fullmatch("[0-9]{3}-[0-9]{4}", r.choices[0].text)


def test_strict_json_schema_and_ebnf_without_xgrammar(openai_client, model_name):
    """`strict` json_schema is served; `ebnf` on the default (outlines) backend is a 400 that says
    which backend serves it."""
    import json

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "flag", "schema": schema, "strict": True}}
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, response_format=fmt, max_tokens=16)
    assert isinstance(json.loads(r.choices[0].message.content)["ok"], bool)
    with pytest.raises(openai.BadRequestError, match="--grammar-backend xgrammar"):
        openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=8,
                                         extra_body={"ebnf": 'root ::= "yes" | "no"'})
