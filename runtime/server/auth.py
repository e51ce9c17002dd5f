"""`--api-key`: every route except the health checks needs `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from sgl.runtime.server.errors import error_body

# Load balancers probe these without credentials (SGLang exempts every path starting /health).
_OPEN_PREFIX = "/health"


class ApiKeyMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware), so streaming and disconnect detection pass through."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(error_body("Unauthorized: pass the server's API key as 'Authorization: Bearer <key>'",
                                       401))
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        if scope.get("method") == "OPTIONS" or scope.get("path", "").startswith(_OPEN_PREFIX):
            return True
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        return hmac.compare_digest(given, self.expected)
