"""Running a GenerateReqInput for a route: one result, or a primed stream.

Both forms turn a request the scheduler refused (an abort with status 400) into an HTTP 400, and
tie the request to its client: a client that goes away aborts it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, List, Optional, Tuple, Union

from starlette.requests import Request

from sgl.runtime.tokenizer.generate_input import GenerateReqInput
from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.responses import until_disconnect
from sgl.runtime.server.state import ServerState

# One HTTP request may not fan out into more runtime requests than this (prompts x n).
MAX_FANOUT = 4096

Result = Union[dict, List[dict]]


async def generate_once(state: ServerState, obj: GenerateReqInput, request: Request) -> Result:
    """The final result of a non-streaming request (a dict, or a list for a batch)."""
    # The disconnect watcher below replaces the tokenizer manager's own (slower) polling.
    agen = state.tm.generate_request(obj)
    try:
        result = await until_disconnect(request, agen.__anext__())
    finally:
        await agen.aclose()
    _raise_if_any_rejected(result)
    return result


async def encode_once(state: ServerState, obj: GenerateReqInput, request: Request) -> Result:
    """Embeddings (or reward scores) of a request's prompts: a dict, or a list for a batch."""
    result = await until_disconnect(request, state.tm.encode_request(obj))
    _raise_if_any_rejected(result)
    return result


def _raise_if_any_rejected(result: Result) -> None:
    for out in result if isinstance(result, list) else [result]:
        raise_if_rejected(out)


async def open_stream(state: ServerState, obj: GenerateReqInput,
                      request: Request) -> Tuple[Optional[dict], AsyncIterator[dict]]:
    """Start a stream and wait for its first update, so that bad input is still an HTTP 400."""
    agen = state.tm.generate_request(obj)
    try:
        first = await until_disconnect(request, _next_or_none(agen))
        if first is not None:
            raise_if_rejected(first)
    except BaseException:
        await agen.aclose()
        raise
    return first, agen


async def _next_or_none(agen: AsyncIterator[dict]) -> Optional[dict]:
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return None


def raise_if_rejected(out: dict) -> None:
    """A request the scheduler refused as invalid is the client's error, not a result."""
    reason = out.get("meta_info", {}).get("finish_reason") or {}
    if reason.get("type") == "abort" and reason.get("status_code") == 400:
        raise ApiError(reason.get("message") or "Bad request", 400)


def check_fanout(batch_size: int, n: Any) -> None:
    n = n if isinstance(n, int) and n > 0 else 1
    if batch_size * n > MAX_FANOUT:
        raise ApiError(f"n: a request may expand to at most {MAX_FANOUT} generations "
                       f"(got {batch_size} prompts x n={n})", 400, "n")
