"""Many clients at once: 32 concurrent streams complete; 50 disconnects leave the KV pool free."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from sgltest.server_process import API_KEY

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def _stream(session, url, i):
    body = {"text": f"Story {i}: once upon a time", "stream": True,
            "sampling_params": {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}}
    events, done = [], False
    async with session.post(url + "/generate", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            line = line.strip()
            if line == b"data: [DONE]":
                done = True
            elif line:
                events.append(json.loads(line[len(b"data: "):]))
    return events, done


def test_32_concurrent_streams(server):
    async def main():
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            return await asyncio.gather(*[_stream(session, server.url, i) for i in range(32)])

    results = asyncio.run(main())
    for i, (events, done) in enumerate(results):
        assert done and events, i
        texts = [e["text"] for e in events]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
        last = events[-1]["meta_info"]
        assert last["finish_reason"] == {"type": "length", "length": 8} and last["completion_tokens"] == 8
    # each equals the same request sent alone, non-streaming
    alone = server.post("/generate", json={"text": "Story 5: once upon a time",
                                           "sampling_params": {"max_new_tokens": 8, "temperature": 0,
                                                               "ignore_eos": True}}).json()
    assert results[5][0][-1]["text"] == alone["text"]


async def _hang_up(session, url, i, stream: bool):
    body = {"text": f"Request {i} tells a very long tale:", "stream": stream,
            "sampling_params": {"max_new_tokens": 1000, "ignore_eos": True}}
    async with session.post(url + "/generate", json=body) as r:
        if stream:
            async for _ in r.content:
                pass
        else:
            await r.read()


def _wait_idle(server, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = server.get("/get_server_info").json()
        if info["num_running_reqs"] == 0 and info["num_waiting_reqs"] == 0:
            return info
        time.sleep(0.25)
    raise AssertionError(f"requests still in flight after {timeout}s: {info}")


def test_50_disconnects_free_the_kv_pool(server):
    async def main():
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            tasks = [asyncio.create_task(_hang_up(session, server.url, i, stream=i % 2 == 0)) for i in range(50)]
            busy = None
            for _ in range(120):
                await asyncio.sleep(0.5)
                busy = server.get("/get_server_info").json()
                if busy["num_running_reqs"] >= 4:
                    break
            for task in tasks:
                task.cancel()  # closes the connections
            await asyncio.gather(*tasks, return_exceptions=True)
            return busy

    busy = asyncio.run(main())
    assert busy["num_running_reqs"] + busy["num_waiting_reqs"] >= 40  # they really were in flight
    info = _wait_idle(server)
    assert info["kv_integrity"] == "ok"
    assert server.post("/flush_cache").status_code == 200
    info = server.get("/get_server_info").json()
    assert info["kv_integrity"] == "ok" and info["available_kv_tokens"] == info["max_total_num_tokens"]
