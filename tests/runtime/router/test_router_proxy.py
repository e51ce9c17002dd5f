"""The router in front of fake workers (tests/sgltest/fake_worker.py subprocesses): proxying,
streaming pass-through, removal of a dead worker and its re-admission, the error of a request in
flight to a killed worker, and /add_worker /remove_worker."""

import json
import threading
import time

import pytest
import requests

from sgltest.router_cluster import FakeWorker, RouterThread, wait_until

@pytest.fixture
def cluster():
    workers = [FakeWorker(), FakeWorker()]
    router = RouterThread([w.url for w in workers], policy="round_robin")
    yield router, workers
    router.stop()
    for w in workers:
        if w.proc.poll() is None:
            w.kill()


def test_proxies_native_and_openai_routes(cluster):
    router, workers = cluster
    ports = set()
    for i in range(4):
        r = requests.post(router.url + "/generate", json={"text": f"hi {i}"}, timeout=10)
        assert r.status_code == 200, r.text
        port, text = r.json()["text"].split(":", 1)
        assert text == f"hi {i}"
        ports.add(int(port))
    assert ports == {w.port for w in workers}  # round robin over both
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/encode"):
        r = requests.post(router.url + path, json={"prompt": "p", "input": "p", "messages": []}, timeout=10)
        assert r.status_code == 200 and r.json()["path"] == path
    for path in ("/v1/models", "/get_model_info", "/get_server_info", "/health_generate", "/health"):
        assert requests.get(router.url + path, timeout=10).status_code == 200, path
    # A worker's own 400 comes back as it is.
    r = requests.post(router.url + "/generate", json={"text": "x", "bad": True}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "bad"
    assert requests.post(router.url + "/flush_cache", timeout=10).status_code == 200
    assert all(["/flush_cache", None] in w.received() for w in workers)
    stats = requests.get(router.url + "/get_router_stats", timeout=5).json()
    assert stats["total_requests"] == 9 and stats["policy"] == "round_robin"
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(requests.get(router.url + "/metrics", timeout=5).text)}
    assert sum(s.value for s in families["sgl_router_requests"].samples) >= 1
    assert {"sgl_router_worker_load", "sgl_router_worker_healthy", "sgl_router_cache_hit_rate"} <= set(families)


def test_bad_input_is_a_400(cluster):
    router, _ = cluster
    r = requests.post(router.url + "/generate", data=b"{not json", timeout=5)
    assert r.status_code == 400 and set(r.json()["error"]) >= {"message", "type", "param"}
    r = requests.post(router.url + "/add_worker", timeout=5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "url"
    r = requests.post(router.url + "/add_worker", params={"url": "nonsense"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["param"] == "url"
    r = requests.post(router.url + "/remove_worker", params={"url": "http://127.0.0.1:1"}, timeout=5)
    assert r.status_code == 400 and "not in the router" in r.json()["error"]["message"]


def test_streaming_is_passed_through_chunk_by_chunk(cluster):
    router, _ = cluster
    start = time.monotonic()
    arrivals = []
    with requests.post(router.url + "/generate", json={"text": "s", "stream": True}, stream=True, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line:
                arrivals.append((time.monotonic() - start, line))
    assert [line for _, line in arrivals][-1] == b"data: [DONE]"
    assert len(arrivals) == 4
    # The first chunk arrived well before the worker finished (3 x 0.3 s): not buffered.
    assert arrivals[0][0] < arrivals[-1][0] - 0.5


def test_killed_worker_fails_only_its_requests_and_comes_back(cluster):
    router, workers = cluster
    w0, w1 = workers
    # A request in flight to w0 (round robin sends the first request to w0).
    result = {}

    def slow():
        result["r"] = requests.post(router.url + "/generate", json={"text": "slow"}, timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: router.workers()[w0.url]["load"] == 1)
    w0.kill()
    thread.join(20)
    r = result["r"]
    assert r.status_code == 502
    err = r.json()["error"]
    assert w0.url in err["message"] and set(err) >= {"message", "type", "param"}
    assert err["type"] == "BadGatewayError"
    assert router.workers()[w0.url]["healthy"] is False
    # The router keeps serving with the rest.
    for _ in range(3):
        r = requests.post(router.url + "/generate", json={"text": "after"}, timeout=10)
        assert r.status_code == 200 and r.json()["text"].startswith(f"{w1.port}:")
    # The worker comes back on the same port: the health check re-admits it.
    workers.append(FakeWorker(w0.port))  # the fixture stops it
    wait_until(lambda: router.workers()[w0.url]["healthy"])
    ports = {requests.post(router.url + "/generate", json={"text": "x"}, timeout=10).json()["text"].split(":")[0]
             for _ in range(4)}
    assert ports == {str(w0.port), str(w1.port)}


def test_stream_from_a_killed_worker_ends_with_an_error_event(cluster):
    router, (w0, w1) = cluster
    with requests.post(router.url + "/generate", json={"text": "s", "stream": True}, stream=True, timeout=10) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert first.startswith(b"data: {")
        w0.kill()
        rest = [line for line in lines if line]
    last = json.loads(rest[-1][len(b"data: "):])
    assert last["error"]["type"] == "BadGatewayError" and w0.url in last["error"]["message"]


def test_no_healthy_worker_is_a_503(cluster):
    router, workers = cluster
    for w in workers:
        w.kill()
    wait_until(lambda: not any(w["healthy"] for w in router.workers().values()))
    r = requests.post(router.url + "/generate", json={"text": "x"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
    assert requests.get(router.url + "/health", timeout=5).status_code == 503


def test_add_and_remove_worker(cluster):
    router, (w0, w1) = cluster
    r = requests.post(router.url + "/remove_worker", params={"url": w1.url}, timeout=5)
    assert r.status_code == 200
    assert requests.get(router.url + "/list_workers", timeout=5).json()["urls"] == [w0.url]
    for _ in range(3):
        assert requests.post(router.url + "/generate", json={"text": "x"}, timeout=10).json()["text"].startswith(
            f"{w0.port}:")
    r = requests.post(router.url + "/add_worker", params={"url": w1.url + "/"}, timeout=5)
    assert r.status_code == 200 and r.json()["healthy"] is True
    r = requests.post(router.url + "/add_worker", params={"url": w1.url}, timeout=5)
    assert r.status_code == 400 and "already" in r.json()["error"]["message"]
    ports = {requests.post(router.url + "/generate", json={"text": "x"}, timeout=10).json()["text"].split(":")[0]
             for _ in range(4)}
    assert ports == {str(w0.port), str(w1.port)}


def test_cache_aware_sends_a_shared_prefix_to_one_worker():
    workers = [FakeWorker(), FakeWorker()]
    router = RouterThread([w.url for w in workers], policy="cache_aware")
    try:
        prefix = "system prompt " * 10
        for group in ("A", "B"):
            for i in range(3):
                requests.post(router.url + "/generate", json={"text": f"{group} {prefix} q{i}"}, timeout=10)
        texts = [[body["text"][0] for _, body in w.received()] for w in workers]
        assert sorted(texts) == [["A"] * 3, ["B"] * 3]
        stats = requests.get(router.url + "/get_router_stats", timeout=5).json()
        assert 0.5 < stats["cache_hit_rate"] < 1
    finally:
        router.stop()
        for w in workers:
            w.kill()


def test_client_leaving_a_stream_ends_its_load(cluster):
    router, _ = cluster
    with requests.post(router.url + "/generate", json={"text": "s", "stream": True}, stream=True, timeout=10) as r:
        next(line for line in r.iter_lines() if line)
    wait_until(lambda: all(w["load"] == 0 for w in router.workers().values()))
    assert requests.post(router.url + "/generate", json={"text": "x"}, timeout=10).status_code == 200
