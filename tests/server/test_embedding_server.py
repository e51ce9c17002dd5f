"""A server launched with --is-embedding on the default model (through `sgl.Runtime`): /encode,
/classify, /v1/embeddings (with the official openai client, base64 and float), `Runtime.encode`,
and the 400s of both kinds of server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import requests

from sgl.runtime.models.model_config import NOT_EMBEDDING_MODEL, NOT_GENERATION_MODEL

TEXTS = ["The capital of France is", "1, 2, 3,"]


class _Http:
    def __init__(self, runtime):
        self.runtime, self.url = runtime, runtime.url

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=300, **kw)

    def post(self, path, **kw):
        return requests.post(self.url + path, timeout=300, **kw)


@pytest.fixture(scope="module")
def embed_server():
    import sgl

    runtime = sgl.Runtime(is_embedding=True, max_total_tokens=4096, dtype="float32")
    try:
        yield _Http(runtime)
    finally:
        runtime.shutdown()


@pytest.fixture(scope="module")
def client(embed_server):
    import openai

    return openai.OpenAI(base_url=embed_server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def _error(response, status=400):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) >= {"message", "type", "param"}
    return err


def test_encode_and_classify(embed_server, tokenizer):
    one = embed_server.post("/encode", json={"text": TEXTS[0], "rid": "enc-1"}).json()
    assert one["meta_info"] == {"id": "enc-1", "finish_reason": {"type": "length", "length": 0},
                                "prompt_tokens": len(tokenizer.encode(TEXTS[0]))}
    assert math.isclose(float(np.linalg.norm(one["embedding"])), 1.0, rel_tol=1e-5)
    batch = embed_server.post("/encode", json={"text": TEXTS}).json()
    assert [len(b["embedding"]) for b in batch] == [576, 576]
    assert batch[0]["embedding"] == pytest.approx(one["embedding"], abs=1e-5)
    by_ids = requests_put(embed_server, "/encode", {"input_ids": tokenizer.encode(TEXTS[1])})
    assert by_ids["embedding"] == pytest.approx(batch[1]["embedding"], abs=1e-5)
    classified = embed_server.post("/classify", json={"text": TEXTS[0]}).json()
    assert classified["embedding"] == pytest.approx(one["embedding"], abs=1e-5)
    through_runtime = json.loads(embed_server.runtime.encode(TEXTS[0]))
    assert through_runtime["embedding"] == pytest.approx(one["embedding"], abs=1e-5)


def requests_put(server, path, body):
    return requests.put(server.url + path, json=body, timeout=300).json()


def test_openai_embeddings_base64_and_float(embed_server, client, tokenizer):
    default = client.embeddings.create(model="default", input=TEXTS)  # the client asks for base64
    floats = client.embeddings.create(model="default", input=TEXTS, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1] and default.object == "list"
    want = [e["embedding"] for e in embed_server.post("/encode", json={"text": TEXTS}).json()]
    for got_b64, got_float, ref in zip(default.data, floats.data, want):
        assert got_float.embedding == pytest.approx(ref, abs=1e-6)
        assert got_b64.embedding == pytest.approx(ref, abs=1e-6)  # float32 precision
    n = sum(len(tokenizer.encode(t)) for t in TEXTS)
    assert floats.usage.prompt_tokens == n and floats.usage.total_tokens == n
    ids = [tokenizer.encode(t) for t in TEXTS]
    by_ids = client.embeddings.create(model="default", input=ids, encoding_format="float")
    one_ids = client.embeddings.create(model="default", input=ids[0], encoding_format="float")
    assert by_ids.data[1].embedding == pytest.approx(want[1], abs=1e-5)
    assert len(one_ids.data) == 1 and one_ids.data[0].embedding == pytest.approx(want[0], abs=1e-5)
    same = client.embeddings.create(model="default", input="x", dimensions=576, encoding_format="float")
    assert len(same.data[0].embedding) == 576


def test_embedding_server_refusals(embed_server):
    err = _error(embed_server.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}}))
    assert err["message"] == NOT_GENERATION_MODEL
    _error(embed_server.post("/v1/completions", json={"model": "m", "prompt": "Hi"}))
    for body in ({"model": "m", "input": 5}, {"model": "m", "input": [1, "a"]}, {"model": "m", "input": []},
                 {"model": "m", "input": "x", "encoding_format": "int8"}, {"input": "x"}):
        _error(embed_server.post("/v1/embeddings", json=body))
    err = _error(embed_server.post("/v1/embeddings", json={"model": "m", "input": "x", "dimensions": 64}))
    assert err["param"] == "dimensions"
    _error(embed_server.post("/v1/embeddings", json={"model": "m", "input": [10**9]}))
    assert embed_server.post("/encode", json={"text": "x", "sampling_params": {"max_new_tokens": 9}}).status_code == 200
    for body in ({}, {"text": "x", "input_ids": [1]}, {"text": "x", "image_data": "a.png"}, {"text": "x", "stream": True},
                 {"input_embeds": [[0.1]]}, {"text": 5}):
        _error(embed_server.post("/encode", json=body))


def test_embedding_server_health_and_info(embed_server):
    assert embed_server.get("/health_generate").status_code == 200
    info = embed_server.get("/get_model_info").json()
    assert info["is_generation"] is False
    assert embed_server.get("/get_server_info").json()["kv_integrity"] == "ok"


def test_generation_server_refuses_encode(server):
    """The session's generation server (tests/server/conftest.py)."""
    for path in ("/encode", "/classify"):
        err = _error(server.post(path, json={"text": "Hi"}))
        assert err["message"] == NOT_EMBEDDING_MODEL
    _error(server.post("/v1/embeddings", json={"model": "m", "input": "Hi"}))
