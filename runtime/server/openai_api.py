"""The OpenAI-compatible routes: `/v1/completions` and `/v1/chat/completions`."""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sgl.runtime.server import openai_chat, openai_completions
from sgl.runtime.server.errors import error_event
from sgl.runtime.server.generation import generate_once, open_stream
from sgl.runtime.server.openai_common import new_id, now
from sgl.runtime.server.protocol import ChatCompletionRequest, CompletionRequest
from sgl.runtime.server.responses import DONE, EventStreamResponse, json_response, sse_event
from sgl.runtime.server.state import get_state

router = APIRouter()


@router.post("/v1/completions")
async def create_completion(req: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    obj = openai_completions.build_input(req)
    echoes = openai_completions.echo_texts(req, state)
    rid, created = new_id("cmpl"), now()
    cache_report = state.server_args.enable_cache_report
    if obj.stream:
        first, agen = await open_stream(state, obj, request)
        stream = openai_completions.CompletionStream(req, echoes, rid, created, cache_report)
        return EventStreamResponse(_events(first, agen, stream))
    results = _as_list(await generate_once(state, obj, request))
    return json_response(openai_completions.response(req, results, echoes, rid, created, cache_report))


@router.post("/v1/chat/completions")
async def create_chat_completion(req: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    obj, plan = openai_chat.build_input(req, state)
    rid, created = new_id("chatcmpl"), now()
    cache_report = state.server_args.enable_cache_report
    if obj.stream:
        first, agen = await open_stream(state, obj, request)
        stream = openai_chat.ChatStream(req, rid, created, cache_report, plan)
        return EventStreamResponse(_events(first, agen, stream))
    results = _as_list(await generate_once(state, obj, request))
    return json_response(openai_chat.response(req, results, rid, created, cache_report, plan))


def _as_list(result: Any) -> list:
    return result if isinstance(result, list) else [result]


async def _events(first: Optional[dict], agen: AsyncIterator[dict], stream: Any) -> AsyncIterator[bytes]:
    """SSE chunks for one OpenAI stream; errors after the reply started go into the stream."""
    try:
        if first is not None:
            for chunk in stream.chunks(first):
                yield sse_event(chunk)
        async for out in agen:
            for chunk in stream.chunks(out):
                yield sse_event(chunk)
        for chunk in stream.tail():
            yield sse_event(chunk)
    except Exception as e:
        yield sse_event(error_event(e))
    finally:
        await agen.aclose()
    yield DONE
