"""Checks that need the real runtime (skipped unless SGL_TEST_REAL_BACKEND / SGL_TEST_BACKEND_URL).

A program's role text must equal what the server builds for `/v1/chat/completions` from the same
messages: over HTTP this compares prompt token counts of /generate and /v1/chat/completions; on an
in-process engine it compares the text with the engine tokenizer's `apply_chat_template`.
"""

from __future__ import annotations

import pytest
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


def test_sixteen_programs_share_a_cached_prefix(real_backend):
    from sgltest.programs import prefix_reuse

    sgl.set_default_backend(real_backend)
    try:
        prefix_reuse()
    finally:
        sgl.global_config.default_backend = None


def test_min_tokens_counts_on_the_real_model(real_backend):
    @sgl.function
    def short(s):
        s += sgl.user("Say yes.")
        s += sgl.assistant(sgl.gen("a", min_tokens=20, max_tokens=24, temperature=0))

    meta = short.run(backend=real_backend).get_meta_info("a")
    assert 20 <= meta["completion_tokens"] <= 24


@pytest.mark.parametrize("method", [sgl.token_length_normalized, sgl.greedy_token_selection,
                                    sgl.unconditional_likelihood_normalized])
def test_select_methods_on_the_real_model(real_backend, method):
    @sgl.function
    def pick(s):
        s += "The opposite of hot is" + sgl.select("w", [" cold", " warm", " purple"], choices_method=method)

    state = pick.run(backend=real_backend)
    assert state["w"] in (" cold", " warm", " purple")
    assert all(len(lps) >= 1 for lps in state.get_meta_info("w")["input_token_logprobs"])
