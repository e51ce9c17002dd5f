"""Checks that need the real runtime, on both real backends (conftest.py's `real_backend`).

A program's role text must equal what the server builds for `/v1/chat/completions` from the same
messages: over HTTP this compares prompt token counts of /generate and /v1/chat/completions; on an
in-process engine it compares the text with the engine tokenizer's `apply_chat_template`.
(The conformance programs, sgltest/programs.py, run on the same backends.)
"""

from __future__ import annotations

import requests

import sgl
from sgl.backend import as_backend
from sgl.jinja_template import JinjaChatTemplate


@sgl.function
def _conversation(s):
    s += sgl.system("You are terse.")
    s += sgl.user("Name a fruit.")
    s += sgl.assistant(sgl.gen("first", max_tokens=8, temperature=0))
    s += sgl.user("Another one?")
    s += sgl.assistant_begin()


def _server_prompt_tokens(endpoint, messages):
    response = requests.post(endpoint.base_url + "/v1/chat/completions", timeout=300,
                             headers={"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {},
                             json={"model": "default", "messages": messages, "max_tokens": 1, "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


def test_role_text_equals_server_chat_rendering(real_backend):
    backend = as_backend(real_backend)
    assert isinstance(backend.get_chat_template(), JinjaChatTemplate)  # the model's own template
    state = _conversation.run(backend=backend)
    text, messages = state.text(), state.messages()
    if isinstance(backend, sgl.RuntimeEndpoint):
        prompt_tokens = backend._send({"text": text, "sampling_params": {"max_new_tokens": 0}})["meta_info"]["prompt_tokens"]
        assert prompt_tokens == _server_prompt_tokens(backend, messages)
    else:
        tokenizer = backend.engine.tokenizer
        assert text == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

