"""A fake worker for router tests: `python fake_worker.py --port P` serves canned server replies.

/generate echoes the worker's port and the text; `"stream": true` sends three SSE chunks 0.3 s
apart; a text starting with "slow" waits 30 s first (so a test can kill the worker mid-request).
GET /fake/requests lists the (path, body) pairs it received.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

RECEIVED = []


def _text(body: dict) -> str:
    for key in ("text", "prompt", "input"):
        if key in body:
            return json.dumps(body[key]) if not isinstance(body[key], str) else body[key]
    return json.dumps(body.get("messages"))


async def generate(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    RECEIVED.append((request.path, body))
    text, port = _text(body), request.app["port"]
    if text.startswith("slow"):
        await asyncio.sleep(30)
    if body.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"data: {json.dumps({'text': f'{port}:{i}'})}\n\n".encode())
            await asyncio.sleep(0.3)
        await resp.write(b"data: [DONE]\n\n")
        return resp
    if body.get("bad"):
        return web.json_response({"error": {"message": "bad: no", "type": "BadRequestError", "param": "bad"}},
                                 status=400)
    return web.json_response({"text": f"{port}:{text}", "path": request.path,
                              "meta_info": {"prompt_tokens": len(text), "cached_tokens": 0}})


async def info(request: web.Request) -> web.Response:
    return web.json_response({"port": request.app["port"], "path": request.path})


async def flush(request: web.Request) -> web.Response:
    RECEIVED.append((request.path, None))
    return web.Response(text="Cache flushed.\n")


async def received(request: web.Request) -> web.Response:
    return web.json_response(RECEIVED)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = web.Application()
    app["port"] = port
    for path in ("/generate", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/encode"):
        app.router.add_post(path, generate)
    for path in ("/health", "/v1/models", "/get_model_info", "/get_server_info", "/health_generate"):
        app.router.add_get(path, info)
    app.router.add_route("*", "/flush_cache", flush)
    app.router.add_get("/fake/requests", received)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
