"""The OpenAI backend through the real `openai` client, against the server's /v1 routes (the real
HTTP app over a FakeEngine whose answers the tests choose)."""

from __future__ import annotations

import json

import pytest
from sgltest.fake_engine import FakeEngine
from sgltest.fake_server import FakeServer
from sgltest.templates import SMOLLM2_TEMPLATE

import sgl

pytest.importorskip("openai")


@pytest.fixture
def server():
    def responder(prompt, params):
        if prompt.endswith("Name:"):
            return " Ann\nJob: chef\n"
        return None

    with FakeServer(FakeEngine(responder=responder, chat_template=SMOLLM2_TEMPLATE)) as server:
        server.v1 = server.url + "/v1"
        yield server


def _chat_requests(state):
    return [body for path, body in state.requests if path == "/v1/chat/completions"]


def test_chat_model_sends_messages(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")

    @sgl.function
    def chat(s):
        s += sgl.system("Be brief.")
        s += sgl.user("Hi")
        s += sgl.assistant(sgl.gen("answer", max_tokens=8))

    state = chat.run(backend=backend, temperature=0)
    assert isinstance(state["answer"], str) and state.error() is None
    body = _chat_requests(server)[0]
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body["max_tokens"] == 8 and body["temperature"] == 0
    assert backend.token_usage.completion_tokens == state.get_meta_info("answer")["completion_tokens"]


def test_chat_gen_must_follow_assistant_begin(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")

    @sgl.function
    def misplaced(s):
        s += sgl.user("Hi")
        with s.assistant():
            s += "Sure:" + sgl.gen("x", max_tokens=4)

    assert "right after sgl.assistant" in str(misplaced.run(backend=backend).error())


def test_unsupported_features_raise_not_implemented(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")

    @sgl.function
    def regex(s):
        s += sgl.user("IP?") + sgl.assistant(sgl.gen("ip", regex=r"\d+"))

    @sgl.function
    def choose(s):
        s += sgl.user("Pick") + sgl.assistant(sgl.select("c", ["a", "b"]))

    @sgl.function
    def tools(s):
        tool = {"type": "function", "function": {"name": "f"}}
        s += sgl.user("Call f") + sgl.assistant(sgl.gen("c", tools=[tool]))

    assert isinstance(regex.run(backend=backend).error(), NotImplementedError)
    error = tools.run(backend=backend).error()
    assert isinstance(error, NotImplementedError) and "tools" in str(error)
    error = choose.run(backend=backend).error()
    assert isinstance(error, NotImplementedError) and "chat models" in str(error)


def test_json_schema_uses_response_format(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}

    @sgl.function
    def person(s):
        s += sgl.user("Age?") + sgl.assistant(sgl.gen("p", json_schema=schema, max_tokens=16))

    state = person.run(backend=backend)
    assert isinstance(json.loads(state["p"])["age"], int)
    assert _chat_requests(server)[0]["response_format"]["json_schema"]["schema"] == schema


def test_chat_streaming(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")

    @sgl.function
    def chat(s):
        s += sgl.user("Tell a story") + sgl.assistant(sgl.gen("story", max_tokens=8))

    state = chat.run(backend=backend, stream=True)
    assert "".join(state.text_iter("story")) == state["story"]


def test_completion_model_text_and_quoted_strings(server):
    backend = sgl.OpenAI("fake-instruct", base_url=server.v1, api_key="none", is_chat_model=False)

    @sgl.function
    def fill(s):
        s += "Q: name?\nA:" + sgl.gen("a", max_tokens=6, stop="\n")
        s += "\nQuoted: " + sgl.gen_string("q", max_tokens=6)

    state = fill.run(backend=backend)
    assert "\n" not in state["a"]
    assert state["q"].startswith('"') and state["q"].endswith('"')
    bodies = [body for path, body in server.requests if path == "/v1/completions"]
    assert bodies[0]["prompt"] == "Q: name?\nA:" and bodies[1]["prompt"].endswith('Quoted: "')
    assert bodies[1]["stop"] == '"'


def test_chat_speculative_execution_makes_one_call(server):
    backend = sgl.OpenAI("fake-chat", base_url=server.v1, api_key="none")

    @sgl.function(num_api_spec_tokens=32)
    def character(s):
        s += sgl.user("Make a character")
        s += sgl.assistant("Name:" + sgl.gen("name", stop="\n") + "\nJob:" + sgl.gen("job", stop="\n"))

    server.engine.responder = lambda prompt, params: "Name: Ann\nJob: chef\n"
    state = character.run(backend=backend)
    assert (state["name"], state["job"]) == (" Ann", " chef")
    assert len(_chat_requests(server)) == 1
    assert state.messages()[-1]["content"] == "Name: Ann\nJob: chef"


def test_bad_model_name():
    with pytest.raises(ValueError, match="model_name"):
        sgl.OpenAI("", api_key="none")


class _CharTokenizer:
    """tiktoken's shape (encode, decode, n_vocab, eot_token) over single characters."""

    n_vocab = 128
    eot_token = 0

    def encode(self, text):
        return [ord(ch) for ch in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class _BiasedCompletions:
    """A completions API stub: a one-token biased request gets the biased token that spells the
    next character of `prefer` (else the first biased token); other requests get "42"."""

    def __init__(self, prefer):
        self.prefer = prefer
        self.calls = []

    def create(self, model, prompt, logit_bias=None, max_tokens=None, temperature=None, **kwargs):
        self.calls.append({"prompt": prompt, "logit_bias": logit_bias, **kwargs})
        text = "42"
        if logit_bias and max_tokens == 1:
            step = len(self.calls) - 1
            wanted = ord(self.prefer[step]) if step < len(self.prefer) else None
            text = chr(wanted if wanted in logit_bias else next(iter(logit_bias)))
        choice = type("Choice", (), {"text": text, "finish_reason": "stop"})()
        return type("Response", (), {"choices": [choice], "usage": None, "id": "x"})()


def _completion_backend(server, prefer):
    backend = sgl.OpenAI("fake-instruct", base_url=server.v1, api_key="none", is_chat_model=False)
    backend.tokenizer = _CharTokenizer()
    backend.client = type("Client", (), {"completions": _BiasedCompletions(prefer)})()
    return backend


def test_completion_select_steps_with_logit_bias(server):
    backend = _completion_backend(server, prefer="Finish")

    @sgl.function
    def act(s):
        s += "Action: " + sgl.select("a", ["Search", "Finish", "Fetch"])

    state = act.run(backend=backend)
    assert state["a"] == "Finish"
    calls = backend.client.completions.calls
    assert sorted(calls[0]["logit_bias"]) == sorted({ord("S"), ord("F")})  # first tokens of the options
    assert calls[1]["logit_bias"] == {ord("i"): 100, ord("e"): 100}  # "Search" is out after step 0
    assert len(calls) == 2  # one option left after two steps
    assert state.get_meta_info("a")["scores"] == [0, 2, 1]


def test_completion_int_uses_digit_logit_bias(server):
    backend = _completion_backend(server, prefer="")

    @sgl.function
    def count(s):
        s += "Days in a week: " + sgl.gen_int("n", max_tokens=4)

    assert count.run(backend=backend)["n"] == "42"
    call = backend.client.completions.calls[0]
    assert call["stop"] == [" "] and set(call["logit_bias"]) == {0, 32, *range(48, 58)}
