"""SGLang's native routes: /generate (single, batch, n, stream, logprobs), info, control, errors."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from sgltest.server_process import API_KEY

PROMPT = "The capital of France is"


def gen(server, body, **kw):
    return server.post("/generate", json=body, **kw)


def sse(response) -> list:
    """The events of an SSE reply; the last one must be [DONE]."""
    events = [line[len("data: "):] for line in response.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_generate_single(server):
    r = gen(server, {"text": PROMPT, "sampling_params": {"max_new_tokens": 6, "temperature": 0}, "rid": "my-rid-1"})
    assert r.status_code == 200
    out = r.json()
    meta = out["meta_info"]
    assert out["text"] and meta["id"] == "my-rid-1"
    assert meta["completion_tokens"] <= 6 and meta["prompt_tokens"] > 0 and "cached_tokens" in meta
    assert meta["finish_reason"]["type"] in ("length", "stop")


def test_generate_put_and_input_ids_match_text(server):
    by_text = gen(server, {"text": PROMPT, "sampling_params": {"max_new_tokens": 6, "temperature": 0}}).json()
    info = server.post("/v1/completions", json={"model": "m", "prompt": PROMPT, "max_tokens": 1, "logprobs": 0,
                                                "echo": False}).json()
    assert info["usage"]["prompt_tokens"] == by_text["meta_info"]["prompt_tokens"]
    ids = gen(server, {"text": PROMPT, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
                       "logprob_start_len": 0}).json()["meta_info"]["input_token_logprobs"]
    r = requests.put(server.url + "/generate", headers=server.headers, timeout=120,
                     json={"input_ids": [t[1] for t in ids], "sampling_params": {"max_new_tokens": 6, "temperature": 0}})
    assert r.status_code == 200 and r.json()["text"] == by_text["text"]


def test_generate_batch_with_param_list(server):
    body = {"text": [PROMPT, "1, 2, 3,"], "sampling_params": [{"max_new_tokens": 3, "temperature": 0},
                                                             {"max_new_tokens": 5, "temperature": 0, "ignore_eos": True}]}
    out = gen(server, body).json()
    assert isinstance(out, list) and len(out) == 2
    assert out[1]["meta_info"]["completion_tokens"] == 5
    single = gen(server, {"text": "1, 2, 3,", "sampling_params": {"max_new_tokens": 5, "temperature": 0,
                                                                  "ignore_eos": True}}).json()
    assert single["text"] == out[1]["text"]


def test_generate_parallel_sampling(server):
    out = gen(server, {"text": PROMPT, "sampling_params": {"max_new_tokens": 4, "n": 3, "ignore_eos": True}}).json()
    assert len(out) == 3 and len({o["meta_info"]["id"] for o in out}) == 3
    # the prompt was cached first, so every copy reuses it
    assert all(o["meta_info"]["cached_tokens"] > 0 for o in out)


def test_generate_stream_is_cumulative(server):
    body = {"text": PROMPT, "stream": True, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
    with gen(server, body, stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    texts = [e["text"] for e in events]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert all(e["meta_info"]["finish_reason"] is None for e in events[:-1])
    assert events[-1]["meta_info"]["finish_reason"] is not None
    full = gen(server, {**body, "stream": False}).json()
    assert texts[-1] == full["text"]


def test_generate_stream_batch_has_index(server):
    body = {"text": [PROMPT, "Hello"], "stream": True, "sampling_params": {"max_new_tokens": 3, "temperature": 0}}
    with gen(server, body, stream=True) as r:
        events = sse(r)
    assert {e["index"] for e in events} == {0, 1}


def test_generate_logprobs(server):
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 4, "temperature": 0}, "return_logprob": True,
            "logprob_start_len": 0, "top_logprobs_num": 2, "return_text_in_logprobs": True}
    meta = gen(server, body).json()["meta_info"]
    inputs, outputs = meta["input_token_logprobs"], meta["output_token_logprobs"]
    assert len(inputs) == meta["prompt_tokens"] and inputs[0][0] is None
    assert len(outputs) == meta["completion_tokens"] and all(lp <= 0 and text is not None for lp, _, text in outputs)
    assert len(meta["output_top_logprobs"]) == len(outputs)
    assert all(top[0][1] == out[1] for top, out in zip(meta["output_top_logprobs"], outputs))  # greedy = argmax


def test_generate_stop_string(server):
    body = {"text": "1, 2, 3, 4,", "sampling_params": {"max_new_tokens": 20, "temperature": 0, "stop": " 7"}}
    out = gen(server, body).json()
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 7"}
    assert out["text"].endswith(" 6,")


def test_generate_open_max_new_tokens(server):
    body = {"text": "1, 2, 3, 4,", "sampling_params": {"max_new_tokens": None, "temperature": 0, "stop": " 9"}}
    out = gen(server, body).json()
    assert out["meta_info"]["finish_reason"]["type"] == "stop"


def test_health_routes_are_open(server):
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    assert requests.get(server.url + "/health_generate", timeout=60).status_code == 200


def test_model_info(server, tokenizer):
    info = server.get("/get_model_info").json()
    assert set(info) == {"model_path", "tokenizer_path", "is_generation", "chat_template"}
    assert info["is_generation"] is True and info["chat_template"] == tokenizer.chat_template


def test_server_info(server):
    from dataclasses import fields

    from sgl.runtime.server_args import ServerArgs

    info = server.get("/get_server_info").json()
    assert {f.name for f in fields(ServerArgs)} <= set(info)
    assert info["max_total_num_tokens"] == 8192 and info["kv_integrity"] == "ok"
    assert info["max_req_input_len"] > 0 and info["version"]


def test_flush_cache_get_and_post(server):
    assert server.get("/flush_cache").status_code == 200
    assert server.post("/flush_cache").status_code == 200
    info = server.get("/get_server_info").json()
    assert info["available_kv_tokens"] == info["max_total_num_tokens"]


def test_abort_request_route(server):
    rid = "to-abort-1"
    result = {}

    def run():
        body = {"text": PROMPT, "rid": rid, "sampling_params": {"max_new_tokens": 4000, "ignore_eos": True}}
        result["out"] = gen(server, body).json()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(3)
    assert server.post("/abort_request", json={"rid": rid}).status_code == 200
    thread.join(60)
    assert not thread.is_alive()
    assert result["out"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert result["out"]["meta_info"]["completion_tokens"] < 4000


BAD_BODIES = [
    ({"text": PROMPT, "sampling_params": {"temperature": -1}}, "temperature"),
    ({"text": PROMPT, "sampling_params": {"top_p": 1.5}}, "top_p"),
    ({"text": PROMPT, "sampling_params": {"top_k": 0}}, "top_k"),
    ({"text": PROMPT, "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens"),
    ({"text": PROMPT, "sampling_params": {"max_new_tokens": 10**6}}, None),
    ({"text": PROMPT, "sampling_params": {"unknown_knob": 1}}, "sampling_params.unknown_knob"),
    ({"text": PROMPT, "sampling_params": {"temperature": "hot"}}, "sampling_params.temperature"),
    ({"text": PROMPT, "sampling_params": {"regex": "((("}}, None),
    ({"text": PROMPT, "sampling_params": {"regex": "a", "json_schema": "{}"}}, None),
    ({"text": PROMPT, "sampling_params": {"json_schema": '{"type": "integer", "multipleOf": 7}'}}, None),
    ({"text": PROMPT, "sampling_params": {"n": 10**6}}, "n"),
    ({"text": 5}, "text"),
    ({"text": PROMPT, "input_ids": [1, 2]}, None),
    ({}, None),
    ({"input_ids": []}, None),
    ({"input_ids": [10**9]}, None),
    ({"input_ids": [-3]}, None),
    ({"text": "x " * 9000}, None),
    ({"text": PROMPT, "return_logprob": True, "top_logprobs_num": -1}, "top_logprobs_num"),
    ({"text": PROMPT, "return_logprob": True, "logprob_start_len": 100}, None),
    ({"text": PROMPT, "bogus_field": 1}, "bogus_field"),
    ({"text": PROMPT, "lora_path": "x"}, "lora_path"),
    ({"text": [PROMPT, PROMPT], "rid": "same"}, None),
]


@pytest.mark.parametrize("body,param", BAD_BODIES)
def test_bad_generate_is_400_with_error_shape(server, body, param):
    for stream in (False, True):
        r = gen(server, {**body, "stream": stream} if body else body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert {"message", "type", "param"} <= set(error) and error["message"]
        if param is not None:
            assert error["param"] == param


def test_bad_json_and_non_object_bodies(server):
    for data in (b"{not json", b"[1, 2]", b"", b"null"):
        r = requests.post(server.url + "/generate", data=data, timeout=30,
                          headers={**server.headers, "Content-Type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()


def test_unknown_route_and_method(server):
    r = server.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["message"]
    assert server.get("/generate").status_code == 405


@pytest.mark.parametrize("path", ["/generate", "/get_model_info", "/get_server_info", "/v1/models", "/metrics",
                                  "/flush_cache", "/v1/chat/completions"])
def test_api_key_required(server, path):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEY}):
        r = requests.post(server.url + path, json={}, headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["message"].startswith("Unauthorized")
