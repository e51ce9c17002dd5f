"""Error replies: every failure the server reports has the body
`{"error": {"message", "type", "param", "code"}}` (OpenAI's shape, which the official client parses).

Client mistakes (bad JSON, wrong types, out-of-range values, over-long prompts) are 400s; a dead
runtime is 503; only a bug in the server itself may produce a 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sgl.runtime.server.responses import ClientDisconnected

logger = logging.getLogger(__name__)

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
          405: "MethodNotAllowedError", 413: "RequestTooLargeError", 499: "ClientClosedRequest",
          500: "InternalServerError", 502: "BadGatewayError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    """An error with a known HTTP status; raised anywhere under a route."""

    def __init__(self, message: str, status_code: int = 400, param: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.param = param


def error_body(message: str, status_code: int = 400, param: Optional[str] = None) -> dict:
    err_type = _TYPES.get(status_code, "BadRequestError" if status_code < 500 else "InternalServerError")
    return {"error": {"message": message, "type": err_type, "param": param, "code": status_code}}


def error_response(message: str, status_code: int = 400, param: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(message, status_code, param), status_code=status_code)


# Parameter names a ValueError message may start with ("top_p must be in (0, 1]...").
_PARAM_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\b")


def guess_param(message: str, known: Iterable[str]) -> Optional[str]:
    """The parameter a runtime ValueError names, when its message starts with one."""
    match = _PARAM_RE.match(message)
    if match and match.group(1) in set(known):
        return match.group(1)
    quoted = re.search(r"parameter: '([A-Za-z_]+)'", message)  # "Unknown sampling parameter: 'x'."
    return quoted.group(1) if quoted else None


def pydantic_error(errors: list) -> tuple[str, Optional[str]]:
    """A pydantic error list as (message, dotted param path). A union reports one error per
    alternative: the most specific one wins, and those at the same place are merged."""
    if not errors:
        return "Invalid request", None
    # The deepest location is the most specific (the union alternative that got furthest).
    first = max(errors, key=lambda err: len(_param_path(err.get("loc", ())).split(".")))
    if first.get("type") == "json_invalid":
        return f"Invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    loc = _param_path(first.get("loc", ()))
    if not loc:
        return "The request body must be a JSON object (sent with Content-Type: application/json)", None
    msgs = []
    for err in errors:
        if _param_path(err.get("loc", ())) == loc and err.get("msg") not in msgs:
            msgs.append(err.get("msg"))
    return f"{loc}: {'; or '.join(msgs)}", loc


def _param_path(loc: Iterable[Any]) -> str:
    # Drop "body" and the union-alternative tags pydantic inserts ("str", "list[int]", model names):
    # field names here are all lower-case identifiers.
    parts = [str(p) for p in loc if p != "body" and not _is_type_tag(p)]
    return ".".join(parts)


def _is_type_tag(part: Any) -> bool:
    if not isinstance(part, str):
        return False
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool", "dict", "list", "none"}


def install_exception_handlers(app: FastAPI, known_params: Iterable[str]) -> None:
    """Map every exception a route can raise to the error shape; client errors never become 500s."""
    # Imported here, not at the top: the router (sgl.runtime.router) uses this module without torch.
    from sgl.runtime.tokenizer.tokenizer_manager import RuntimeDeadError

    known = tuple(known_params)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.message, exc.status_code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = pydantic_error(list(exc.errors()))
        return error_response(message, 400, param)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        message, param = pydantic_error(exc.errors())
        return error_response(message, 400, param)

    @app.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return error_response(str(exc), 400, guess_param(str(exc), known))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RuntimeDeadError)
    async def _dead(_: Request, exc: RuntimeDeadError) -> JSONResponse:
        return error_response(f"The runtime is down: {exc}", 503)

    @app.exception_handler(ClientDisconnected)
    async def _gone(_: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it; nginx's "client closed request"

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _server_side(exc)


def _server_side(exc: Exception) -> JSONResponse:
    logger.exception("Unhandled server error")
    return error_response(f"Internal server error: {type(exc).__name__}: {exc}", 500)


def error_event(exc: BaseException, known: Iterable[str] = ()) -> dict[str, Any]:
    """The body of an in-stream `data: {"error": ...}` event for an exception raised mid-stream."""
    from sgl.runtime.tokenizer.tokenizer_manager import RuntimeDeadError

    if isinstance(exc, ApiError):
        return error_body(exc.message, exc.status_code, exc.param)
    if isinstance(exc, RuntimeDeadError):
        return error_body(f"The runtime is down: {exc}", 503)
    if isinstance(exc, ValueError):
        return error_body(str(exc), 400, guess_param(str(exc), known))
    logger.exception("Unhandled error in a stream", exc_info=exc)
    return error_body(f"Internal server error: {type(exc).__name__}: {exc}", 500)
