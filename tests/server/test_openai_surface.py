"""The OpenAI routes as a new user meets them, through the official client: unknown fields,
response_format on /v1/completions, seeded n > 1, and echo with logprobs."""

from __future__ import annotations

import json

import openai
import pytest

from sgl.runtime.sampling.params import EXTRA, openai_params

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name a color."}]
COLOR = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"],
         "additionalProperties": False}
# One value per SGLang extension field (what clients send in extra_body), none changing the output much.
EXTRAS = {"top_k": 50, "min_p": 0.0, "min_tokens": 1, "repetition_penalty": 1.0, "stop_token_ids": [0],
          "no_stop_trim": False, "ignore_eos": False, "skip_special_tokens": True}


# ---- unknown fields -----------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["completions", "chat"])
def test_unknown_field_is_400_naming_it(openai_client, model_name, route):
    with pytest.raises(openai.BadRequestError) as err:
        _create(openai_client, route, model=model_name, max_tokens=2, extra_body={"max_tokenz": 4})
    assert err.value.body["param"] == "max_tokenz" and "max_tokenz" in err.value.body["message"]


def test_range_errors_name_the_field_as_sent(openai_client, model_name):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=-1)
    assert err.value.body["param"] == "max_tokens" and err.value.body["message"].startswith("max_tokens must")
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=2,
                                              extra_body={"min_tokens": 5})
    assert err.value.body["param"] == "min_tokens" and "max_new_tokens" not in err.value.body["message"]


def test_sglang_extensions_stay_accepted(openai_client, model_name):
    grammar = {"regex": "[a-z]+"}  # one of the mutually exclusive grammar fields
    extras = {spec.public_name for spec in openai_params() if spec.openai == EXTRA}
    assert extras == {*EXTRAS, "json_schema", "regex", "ebnf", "structural_tag"}  # a new extension gets a value above
    r = openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3, temperature=0,
                                         extra_body={**EXTRAS, **grammar})
    assert r.choices[0].text and r.usage.completion_tokens >= 1
    r = openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=3, temperature=0,
                                              extra_body=EXTRAS)
    assert r.usage.completion_tokens >= 1


def test_json_schema_is_not_a_chat_field(openai_client, model_name):
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        openai_client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=2,
                                              extra_body={"json_schema": json.dumps(COLOR)})


# ---- response_format on /v1/completions ---------------------------------------------------------
def test_completion_response_format_json_schema(openai_client, model_name):
    kw = dict(model=model_name, prompt="Favourite color as JSON:", max_tokens=16, temperature=0)
    fmt = {"type": "json_schema", "json_schema": {"name": "color", "schema": COLOR, "strict": True}}
    r = openai_client.completions.create(**kw, extra_body={"response_format": fmt})
    assert json.loads(r.choices[0].text)["color"] in ("red", "green", "blue")
    # The same constraint as SGLang's own json_schema field: the same greedy text.
    same = openai_client.completions.create(**kw, extra_body={"json_schema": json.dumps(COLOR)})
    assert same.choices[0].text == r.choices[0].text
    loose = {"type": "json_schema", "json_schema": {"name": "color", "schema": COLOR, "strict": False}}
    assert openai_client.completions.create(**kw, extra_body={"response_format": loose}).choices[0].text == \
        r.choices[0].text


def test_completion_response_format_json_object_and_text(openai_client, model_name):
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0)
    r = openai_client.completions.create(**kw, extra_body={"response_format": {"type": "json_object"}})
    assert r.choices[0].text.startswith("{")
    plain = openai_client.completions.create(**kw)
    text = openai_client.completions.create(**kw, extra_body={"response_format": {"type": "text"}})
    assert text.choices[0].text == plain.choices[0].text


@pytest.mark.parametrize("extra", [
    {"response_format": {"type": "json_object"}, "regex": "[0-9]+"},
    {"response_format": {"type": "json_object"}, "json_schema": "{}"},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    {"response_format": {"type": "json_schema", "schema": COLOR}},
])
def test_completion_response_format_errors(openai_client, model_name, extra):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.completions.create(model=model_name, prompt=PROMPT, max_tokens=2, extra_body=extra)
    assert err.value.body["param"].startswith("response_format")


# ---- n > 1 with a seed ----------------------------------------------------------------------------
def test_seeded_completion_choices_differ_and_repeat(openai_client, model_name):
    kw = dict(model=model_name, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=42,
              extra_body={"ignore_eos": True})
    first = [c.text for c in openai_client.completions.create(**kw, n=3).choices]
    again = [c.text for c in openai_client.completions.create(**kw, n=3).choices]
    assert first == again
    assert len(set(first)) == 3
    # The first choice keeps the request's seed: it is what n=1 samples.
    assert openai_client.completions.create(**kw).choices[0].text == first[0]
    streamed = {}
    for chunk in openai_client.completions.create(**kw, n=3, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert [streamed[i] for i in range(3)] == first


def test_seeded_generate_choices_differ_and_repeat(server):
    """The runtime derives the per-choice seeds, so /generate's n behaves as the OpenAI routes do."""
    body = {"text": "Once upon a time", "sampling_params": {"n": 3, "seed": 42, "max_new_tokens": 8,
                                                           "temperature": 1.0, "ignore_eos": True}}
    first = [r["text"] for r in server.post("/generate", json=body).json()]
    again = [r["text"] for r in server.post("/generate", json=body).json()]
    assert first == again and len(set(first)) == 3


def test_seeded_completion_batch_keeps_prompt_order(openai_client, model_name):
    kw = dict(model=model_name, max_tokens=6, temperature=1.0, seed=3, extra_body={"ignore_eos": True})
    prompts = ["Once upon a time", "1, 2, 3,"]
    both = openai_client.completions.create(**kw, prompt=prompts, n=2)
    alone = [openai_client.completions.create(**kw, prompt=p, n=2) for p in prompts]
    assert [c.text for c in both.choices] == [c.text for r in alone for c in r.choices]
    assert both.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in alone)


def test_seeded_chat_choices_differ_and_repeat(openai_client, model_name):
    kw = dict(model=model_name, messages=CHAT, max_tokens=8, temperature=1.0, seed=7, n=3,
              extra_body={"ignore_eos": True})
    first = openai_client.chat.completions.create(**kw)
    again = openai_client.chat.completions.create(**kw)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) == 3 and [c.index for c in first.choices] == [0, 1, 2]
    one = openai_client.chat.completions.create(**{**kw, "n": 1})
    assert first.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once


# ---- echo with logprobs ----------------------------------------------------------------------------
def _check_aligned(text, lp):
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == text
    for token, offset in zip(lp.tokens, lp.text_offset):
        assert text[offset:offset + len(token)] == token


def test_echo_with_logprobs(openai_client, model_name, server):
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    # the same computation for both, from an empty cache: a cached prompt is extended by another
    # kernel path, whose bf16 rounding differs in the second decimal
    assert server.post("/flush_cache").status_code == 200
    echoed = openai_client.completions.create(**kw, echo=True).choices[0]
    assert server.post("/flush_cache").status_code == 200
    plain = openai_client.completions.create(**kw).choices[0]
    native = server.post("/generate", json={
        "text": PROMPT, "return_logprob": True, "logprob_start_len": 0, "return_text_in_logprobs": True,
        "sampling_params": {"max_new_tokens": 0}}).json()["meta_info"]["input_token_logprobs"]
    n_prompt = len(native)
    lp = echoed.logprobs
    assert echoed.text == PROMPT + plain.text
    _check_aligned(echoed.text, lp)
    # The prompt's tokens first, the first of them with nothing to be predicted from ...
    assert lp.tokens[:n_prompt] == [text for _, _, text in native]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:n_prompt] == pytest.approx([v for v, _, _ in native[1:]], abs=1e-4)
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    # ... then exactly what the same request without echo reports.
    assert lp.tokens[n_prompt:] == plain.logprobs.tokens
    assert lp.token_logprobs[n_prompt:] == pytest.approx(plain.logprobs.token_logprobs, abs=1e-4)


def test_echo_with_logprobs_streamed_and_scoring(openai_client, model_name):
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=1, echo=True)
    full = openai_client.completions.create(**kw).choices[0]
    text, tokens, offsets = "", [], []
    for chunk in openai_client.completions.create(**kw, stream=True):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs:
                tokens += choice.logprobs.tokens
                offsets += choice.logprobs.text_offset
    assert (text, tokens, offsets) == (full.text, full.logprobs.tokens, full.logprobs.text_offset)
    # max_tokens=0: the prompt scored, nothing generated.
    scored = openai_client.completions.create(**{**kw, "max_tokens": 0}).choices[0]
    assert scored.text == PROMPT and scored.logprobs.tokens == full.logprobs.tokens[:len(scored.logprobs.tokens)]
    _check_aligned(scored.text, scored.logprobs)


def test_echo_with_logprobs_of_token_prompts(openai_client, model_name, server):
    ids = server.post("/generate", json={"text": PROMPT, "return_logprob": True, "logprob_start_len": 0,
                                         "sampling_params": {"max_new_tokens": 0}}).json()
    ids = [tid for _, tid, _ in ids["meta_info"]["input_token_logprobs"]]
    r = openai_client.completions.create(model=model_name, prompt=[ids, ids], max_tokens=2, temperature=0,
                                         logprobs=1, echo=True)
    for choice in r.choices:
        assert choice.text.startswith(PROMPT)
        _check_aligned(choice.text, choice.logprobs)
        assert choice.logprobs.token_logprobs[0] is None and len(choice.logprobs.tokens) == len(ids) + 2


def _create(client, route, **kw):
    if route == "chat":
        return client.chat.completions.create(messages=CHAT, **kw)
    return client.completions.create(prompt=PROMPT, **kw)
