"""Forwarding one request to one worker: the whole reply, or a stream relayed chunk by chunk.

A worker that cannot be reached before the request is sent is taken out of the rotation and the
request goes to the next choice; a worker that fails after it got the request (it died mid-way)
fails only that request: HTTP 502 naming the worker, or, once a stream has started, a last
`data: {"error": ...}` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Dict, Optional

import aiohttp
from fastapi.responses import Response, StreamingResponse

from sgl.runtime.router.workers import Worker, WorkerPool
from sgl.runtime.server.errors import ApiError, error_body

logger = logging.getLogger(__name__)

# Headers a worker may need (its API key); the rest are the router's own business.
_FORWARDED = ("authorization",)
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def forward_headers(headers) -> Dict[str, str]:
    out = {"Content-Type": "application/json"}
    for name in _FORWARDED:
        if name in headers:
            out[name] = headers[name]
    return out


class WorkerFailed(Exception):
    """The worker could not be reached: nothing was sent, another worker may take the request."""


async def send(session: aiohttp.ClientSession, pool: WorkerPool, worker: Worker, method: str, path: str,
               body: Optional[bytes], headers: Dict[str, str], stream: bool) -> Response:
    """Send to `worker`; its load counts the request until the reply (or stream) ends."""
    worker.load += 1
    try:
        resp = await session.request(method, worker.url + path, data=body, headers=headers)
    except aiohttp.ClientConnectorError as exc:
        worker.load -= 1
        pool.mark_failed(worker.url, f"connection failed: {exc}")
        raise WorkerFailed(str(exc)) from exc
    except _NETWORK_ERRORS as exc:
        worker.load -= 1
        raise _failed(pool, worker, exc) from exc
    if stream and resp.status == 200:
        media = resp.headers.get("Content-Type", "text/event-stream")
        return _RelayResponse(_Relay(pool, worker, resp), media)
    try:
        content = await resp.read()
    except _NETWORK_ERRORS as exc:
        raise _failed(pool, worker, exc) from exc
    finally:
        resp.release()
        worker.load -= 1
    return Response(content, status_code=resp.status, media_type=resp.headers.get("Content-Type"))


def _failed(pool: WorkerPool, worker: Worker, exc: BaseException) -> ApiError:
    worker.stats.failed += 1
    reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    pool.mark_failed(worker.url, reason)
    return ApiError(f"Worker {worker.url} failed during the request ({reason}); the request was lost: "
                    f"retry it (the router sends it to a healthy worker).", 502)


class _Relay:
    """A worker's stream, relayed chunk by chunk; `close` (idempotent) ends the request's load."""

    def __init__(self, pool: WorkerPool, worker: Worker, resp: aiohttp.ClientResponse) -> None:
        self.pool, self.worker, self.resp = pool, worker, resp
        self.finished = self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.resp.content.iter_any():
                yield chunk
            self.finished = True
        except _NETWORK_ERRORS as exc:
            err = _failed(self.pool, self.worker, exc)
            self.finished = True
            yield b"data: " + json.dumps(error_body(err.message, err.status_code)).encode() + b"\n\n"
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.worker.load -= 1
        # The client went away mid-stream: closing the connection aborts the request on the worker.
        self.resp.release() if self.finished else self.resp.close()


class _RelayResponse(StreamingResponse):
    """Closes the relay however the response ends: a client gone before the first chunk never
    starts the generator, so its `finally` alone would not run."""

    def __init__(self, relay: _Relay, media_type: str) -> None:
        super().__init__(relay.chunks(), status_code=200, media_type=media_type)
        self.relay = relay

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.relay.close()
