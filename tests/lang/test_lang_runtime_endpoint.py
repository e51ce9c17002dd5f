"""RuntimeEndpoint speaks the native /generate wire protocol (the real HTTP app over a FakeEngine,
so these tests see exactly what the frontend sends and control what the model answers)."""

from __future__ import annotations

import pytest
from sgltest.fake_engine import FakeEngine
from sgltest.fake_server import FakeServer

import sgl

SAMPLING_KEYS = {
    "skip_special_tokens", "spaces_between_special_tokens", "max_new_tokens", "min_new_tokens", "stop",
    "stop_token_ids", "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
    "ignore_eos", "regex", "json_schema",
}


@pytest.fixture
def server():
    with FakeServer(FakeEngine()) as server:
        yield server


@pytest.fixture
def keyed_server():
    with FakeServer(FakeEngine(), api_key="sekret") as server:
        yield server


def _generate_bodies(state):
    return [body for path, body in state.requests if path == "/generate"]


def test_gen_posts_full_text_with_srt_sampling_names(server):
    backend = sgl.RuntimeEndpoint(server.url)

    @sgl.function
    def two(s):
        s += "Hello:" + sgl.gen("a", max_tokens=3, stop="\n")
        s += " again:" + sgl.gen("b", max_tokens=2, return_logprob=True, logprob_start_len=0,
                                 return_text_in_logprobs=True)

    state = two.run(backend=backend, temperature=0.5)
    state.sync()
    first, second = _generate_bodies(server)
    assert set(first) == {"text", "sampling_params"}
    assert first["text"] == "Hello:"
    assert set(first["sampling_params"]) == SAMPLING_KEYS
    assert first["sampling_params"]["temperature"] == 0.5 and first["sampling_params"]["stop"] == ["\n"]
    assert first["sampling_params"]["skip_special_tokens"] is True
    assert second["text"] == "Hello:" + state["a"] + " again:"  # every request carries the whole text
    assert {k: second[k] for k in ("return_logprob", "logprob_start_len", "return_text_in_logprobs")} == \
        {"return_logprob": True, "logprob_start_len": 0, "return_text_in_logprobs": True}
    assert state.get_meta_info("b")["input_token_logprobs"][0][0] is None


def test_construction_reads_model_info(server):
    backend = sgl.RuntimeEndpoint(server.url + "/")
    assert backend.get_model_name() == "fake/fake-model"
    assert backend.base_url == server.url


def test_streaming_parses_cumulative_sse(server):
    backend = sgl.RuntimeEndpoint(server.url)

    @sgl.function
    def story(s):
        s += "Once" + sgl.gen("rest", max_tokens=6, ignore_eos=True)

    state = story.run(backend=backend, stream=True)
    chunks = list(state.text_iter("rest"))
    assert "".join(chunks) == state["rest"]
    assert state.get_meta_info("rest")["completion_tokens"] == 6
    assert _generate_bodies(server)[-1]["stream"] is True


def test_api_key_is_sent_as_bearer(keyed_server):
    with pytest.raises(RuntimeError, match="401"):
        sgl.RuntimeEndpoint(keyed_server.url)
    backend = sgl.RuntimeEndpoint(keyed_server.url, api_key="sekret")

    @sgl.function
    def one(s):
        s += "x" + sgl.gen("y", max_tokens=2)

    assert isinstance(one.run(backend=backend)["y"], str)


def test_server_errors_become_runtime_errors_with_the_message(server, tmp_path):
    backend = sgl.RuntimeEndpoint(server.url)
    image = tmp_path / "x.png"
    image.write_bytes(b"png")

    @sgl.function
    def look(s):
        s += sgl.image(str(image)) + "Describe:" + sgl.gen("d", max_tokens=2)

    error = look.run(backend=backend).error()
    assert isinstance(error, RuntimeError)
    assert "HTTP 400" in str(error) and "text-only" in str(error)  # the server's own message
    body = _generate_bodies(server)[-1]
    assert isinstance(body["image_data"], str)
    assert not server.engine.requests  # refused before it reached the engine


def test_admin_routes(server):
    backend = sgl.RuntimeEndpoint(server.url)
    server.engine.cache.insert([5, 6])
    assert "flushed" in sgl.flush_cache(backend).lower()
    assert server.engine.cache.match([5, 6]) == 0
    info = sgl.get_server_info(backend)
    assert info["version"] == sgl.__version__ and info["model_path"] == "fake/fake-model"


def test_prefill_only_requests_for_fork_and_cache(server):
    backend = sgl.RuntimeEndpoint(server.url)
    backend.cache_prefix("some prefix")
    assert _generate_bodies(server)[-1] == {"text": "some prefix", "sampling_params": {"max_new_tokens": 0}}


def test_bad_base_url():
    with pytest.raises(ValueError, match="base_url"):
        sgl.RuntimeEndpoint("localhost:30000")
