"""Response helpers: JSON, server-sent events, and tying a request to its client's connection.

`EventStreamResponse` watches the connection while it streams: when the client goes away it stops
iterating and closes the event generator at once, so the generator's `finally` aborts the request
in the runtime and frees its KV (instead of waiting for a write to fail or for garbage collection).
`until_disconnect` does the same for non-streaming requests.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Optional, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


def json_response(obj: Any, status_code: int = 200) -> Response:
    # orjson: fast, and NaN / infinite logprobs become null instead of invalid JSON.
    return Response(orjson.dumps(obj), status_code=status_code, media_type="application/json")


def sse_event(obj: Any) -> bytes:
    # orjson keeps non-ASCII text as UTF-8 (no \u escapes) and is fast for the per-token events.
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ClientDisconnected(Exception):
    pass


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client closes the connection (the body has already been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; cancel it (which aborts the runtime request) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncIterator[bytes], status_code: int = 200, headers: Optional[dict] = None):
        super().__init__(events, status_code=status_code, headers=headers, media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sender = asyncio.ensure_future(self._send_all(send))
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher):
                task.cancel()
            await asyncio.gather(sender, watcher, return_exceptions=True)
            await self.events.aclose()
        if sender.done() and not sender.cancelled() and sender.exception() is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_all(self, send: Send) -> None:
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
