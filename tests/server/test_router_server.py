"""The router in front of the session's real server (default model): a cached prefix, a stream."""

import json

import requests

from sgltest.router_cluster import RouterThread
from sgltest.server_process import API_KEY

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def test_router_in_front_of_a_real_server(server):
    router = RouterThread([server.url], policy="cache_aware")
    try:
        prefix = "You are a terse assistant who answers in one word. " * 6
        body = {"text": prefix + "Capital of France?", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
        first = requests.post(router.url + "/generate", json=body, headers=HEADERS, timeout=120)
        assert first.status_code == 200, first.text
        body["text"] = prefix + "Capital of Spain?"
        second = requests.post(router.url + "/generate", json=body, headers=HEADERS, timeout=120).json()
        assert second["meta_info"]["cached_tokens"] > 0
        body["stream"] = True
        with requests.post(router.url + "/generate", json=body, headers=HEADERS, stream=True, timeout=120) as r:
            events = [line for line in r.iter_lines() if line]
        assert events[-1] == b"data: [DONE]"
        assert "text" in json.loads(events[0][len(b"data: "):])
        unauthorized = requests.post(router.url + "/generate", json=body, timeout=60)
        assert unauthorized.status_code == 401  # the worker's own answer, passed through
    finally:
        router.stop()
