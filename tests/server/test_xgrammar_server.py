"""A server started with --grammar-backend xgrammar: EBNF end to end through /generate and the
official OpenAI client (completions and chat), and JSON schemas through the same backend."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("xgrammar")

from sgltest.server_process import API_KEY, SERVER_ARGS, ServerProcess  # noqa: E402

EBNF = 'root ::= "The answer is " answer "."\nanswer ::= "yes" | "no" | [0-9] [0-9]?'
EBNF_TEXT = r"The answer is (yes|no|[0-9][0-9]?)\."


@pytest.fixture(scope="module")
def xserver():
    proc = ServerProcess([*SERVER_ARGS, "--grammar-backend", "xgrammar"], api_key=API_KEY)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def xclient(xserver):
    import openai

    return openai.OpenAI(base_url=xserver.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def test_generate_with_ebnf(xserver):
    r = xserver.post("/generate", json={"text": "Is the sky blue?", "sampling_params": {
        "ebnf": EBNF, "max_new_tokens": 16, "temperature": 1.0}})
    assert r.status_code == 200, r.text
    assert re.fullmatch(EBNF_TEXT, r.json()["text"])
    bad = xserver.post("/generate", json={"text": "x", "sampling_params": {"ebnf": "root ::= (", "max_new_tokens": 4}})
    assert bad.status_code == 400 and "invalid ebnf grammar" in bad.json()["error"]["message"]


def test_openai_client_ebnf_and_json_schema(xclient):
    model = xclient.models.list().data[0].id
    r = xclient.completions.create(model=model, prompt="Is the sky blue?", max_tokens=16, extra_body={"ebnf": EBNF})
    assert re.fullmatch(EBNF_TEXT, r.choices[0].text)
    r = xclient.chat.completions.create(model=model, messages=[{"role": "user", "content": "Is the sky blue?"}],
                                        max_tokens=16, extra_body={"ebnf": EBNF})
    assert re.fullmatch(EBNF_TEXT, r.choices[0].message.content)
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}}
    r = xclient.chat.completions.create(model=model, messages=[{"role": "user", "content": "A color?"}],
                                        max_tokens=32, response_format=fmt)
    assert json.loads(r.choices[0].message.content)["color"] in {"red", "green", "blue"}
