"""Over `/generate`: the two length errors are 400s that quote the limit that applies (the one
`/get_server_info` reports), say which limit it is, and name the parameter."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def limits(server) -> dict:
    info = server.get("/get_server_info").json()
    return {"prompt": info["max_req_input_len"] - 1, "total": info["max_req_len"] - 1,
            "context": info["context_len"]}


def numbers(message: str) -> set:
    return {int(x) for x in re.findall(r"\d+", message)}


def test_prompt_over_the_prompt_limit(server, limits):
    n = limits["prompt"] + 1
    r = server.post("/generate", json={"input_ids": [100] * n, "sampling_params": {"max_new_tokens": 2}})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input_ids" and "prompt limit" in err["message"]
    assert numbers(err["message"]) == {n, limits["prompt"]}


def test_prompt_plus_max_new_tokens_over_its_limit(server, limits):
    ids = [100] * 10
    over = limits["total"] - 10 + 1
    r = server.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": over}})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "max_new_tokens" and "prompt + max_new_tokens" in err["message"]
    assert limits["total"] in numbers(err["message"])
    assert limits["context"] not in numbers(err["message"]) or limits["context"] == limits["total"]


def test_prompt_plus_max_new_tokens_at_its_limit_is_served(server, limits):
    # Accepted: the stream starts (its first event follows the prompt's prefill); closing it
    # aborts the request, so the test does not wait for thousands of tokens.
    body = {"input_ids": [100] * 10, "stream": True,
            "sampling_params": {"max_new_tokens": limits["total"] - 10, "temperature": 0}}
    with server.post("/generate", json=body, stream=True) as r:
        assert r.status_code == 200
        first = next(line for line in r.iter_lines() if line)
        assert first.startswith(b"data: {")
