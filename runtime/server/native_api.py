"""SGLang's native routes: /generate, health, model and server info, cache and abort control,
and parsing tool calls out of a text."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, Dict, Optional

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from sgl.runtime.tokenizer.generate_input import GenerateReqInput
from sgl.runtime.server.errors import ApiError, error_event, error_response
from sgl.runtime.server.generation import check_fanout, generate_once, open_stream
from sgl.runtime.server.protocol import AbortRequest, FunctionCallRequest, GenerateRequest
from sgl.runtime.server.responses import DONE, EventStreamResponse, json_response, sse_event
from sgl.runtime.server.state import ServerState, get_state

router = APIRouter()

HEALTH_RID_PREFIX = "health-"  # metrics leave these out
_HEALTH_TIMEOUT_S = 20
_FLUSH_MESSAGE = ("Cache flushed.\nPlease check backend logs for more details. "
                  "(When there are running or waiting requests, the operation will not be performed.)")


# ---- /generate ----------------------------------------------------------------------------------
@router.put("/generate", name="generate_put")
@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> Response:
    state = get_state(request)
    obj = to_generate_input(body, state)
    if obj.stream:
        first, agen = await open_stream(state, obj, request)
        return EventStreamResponse(_native_events(first, agen))
    return json_response(await generate_once(state, obj, request))


async def _native_events(first: Optional[dict], agen: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield sse_event(first)
        async for out in agen:
            yield sse_event(out)
    except Exception as e:  # the reply has started: report in the stream
        yield sse_event(error_event(e))
    finally:
        await agen.aclose()
    yield DONE


def to_generate_input(body: GenerateRequest, state: ServerState) -> GenerateReqInput:
    """Check what the runtime cannot serve, then build the runtime's request object."""
    _reject_unsupported_fields(body)
    params = _sampling_dicts(body.sampling_params)
    _check_logprob_args(body.logprob_start_len, body.top_logprobs_num, state.vocab_size)
    obj = GenerateReqInput(
        text=body.text, input_ids=body.input_ids, input_embeds=body.input_embeds, image_data=body.image_data,
        sampling_params=params, rid=body.rid, return_logprob=body.return_logprob,
        logprob_start_len=body.logprob_start_len, top_logprobs_num=body.top_logprobs_num,
        return_text_in_logprobs=body.return_text_in_logprobs, stream=body.stream, log_metrics=body.log_metrics,
        modalities=body.modalities,
    )
    batch = obj.batch_size()  # also validates the prompt fields (ValueError -> 400)
    for sp in params if isinstance(params, list) else [params]:
        check_fanout(batch, sp.get("n", 1))
    return obj


def _reject_unsupported_fields(body: GenerateRequest) -> None:
    for name, what in (("lora_path", "LoRA adapters are"), ("session_params", "sessions are"),
                       ("custom_logit_processor", "custom logit processors are")):
        value = getattr(body, name)
        if value is not None and not (isinstance(value, list) and all(v is None for v in value)):
            raise ApiError(f"{name}: {what} not supported by this server", 400, name)


def _sampling_dicts(params: Any) -> Any:
    if params is None:
        return {}
    if isinstance(params, list):
        return [p.model_dump(exclude_unset=True) for p in params]
    return params.model_dump(exclude_unset=True)


def _check_logprob_args(start_len: Any, top_num: Any, vocab_size: int) -> None:
    for value in start_len if isinstance(start_len, list) else [start_len]:
        if value is not None and value < -1:
            raise ApiError(f"logprob_start_len must be -1 (output only) or >= 0, got {value}", 400, "logprob_start_len")
    for value in top_num if isinstance(top_num, list) else [top_num]:
        if value is not None and not 0 <= value <= vocab_size:
            raise ApiError(f"top_logprobs_num must be in [0, {vocab_size}], got {value}", 400, "top_logprobs_num")


# ---- health and info ----------------------------------------------------------------------------
@router.get("/health")
async def health(request: Request) -> Response:
    state = get_state(request)
    if not state.is_alive():
        return error_response(f"The runtime is down: {_dead_reason(state)}", 503)
    return Response(status_code=200)


@router.get("/health_generate")
async def health_generate(request: Request) -> Response:
    """A real one-token generation through the whole pipeline (an encode on a pooling model)."""
    state = get_state(request)
    obj = GenerateReqInput(input_ids=[0], sampling_params={"max_new_tokens": 1, "temperature": 0.7},
                           rid=HEALTH_RID_PREFIX + uuid.uuid4().hex, log_metrics=False)
    work = _first(state.tm.generate_request(obj)) if state.is_generation else state.tm.encode_request(obj)
    try:
        await asyncio.wait_for(work, timeout=_HEALTH_TIMEOUT_S)
    except Exception as e:  # any failure means unhealthy, whatever its kind
        return error_response(f"The health check generation failed: {type(e).__name__}: {e}", 503)
    return Response(status_code=200)


async def _first(agen: AsyncIterator[dict]) -> dict:
    try:
        return await agen.__anext__()
    finally:
        await agen.aclose()


def _dead_reason(state: ServerState) -> str:
    return state.tm.dead_reason if state.tm is not None else "not started"


@router.get("/get_model_info")
async def get_model_info(request: Request) -> Dict[str, Any]:
    state = get_state(request)
    args = state.server_args
    template = state.chat_template.source if state.chat_template is not None else None
    return {"model_path": args.model_path, "tokenizer_path": args.tokenizer_path, "is_generation": state.is_generation,
            "chat_template": template}


@router.get("/get_server_info")
async def get_server_info(request: Request) -> Response:
    import sgl

    state = get_state(request)
    internal = await state.tm.get_internal_state()
    info = {**state.server_args.to_dict(), **internal, "context_len": state.context_len,
            "vocab_size": state.vocab_size, "version": sgl.__version__}
    return json_response(info)


@router.get("/v1/models")
async def list_models(request: Request) -> Dict[str, Any]:
    state = get_state(request)
    name = state.server_args.served_model_name
    card = {"id": name, "object": "model", "created": request.app.state.started_at, "owned_by": "sglang",
            "root": name, "max_model_len": state.context_len}
    return {"object": "list", "data": [card]}


# ---- control ------------------------------------------------------------------------------------
@router.post("/flush_cache", name="flush_cache_post")
@router.get("/flush_cache")
async def flush_cache(request: Request) -> Response:
    if not await get_state(request).tm.flush_cache():
        return error_response("The cache was not flushed: requests are running or waiting", 400)
    return PlainTextResponse(_FLUSH_MESSAGE)


@router.post("/abort_request")
async def abort_request(body: AbortRequest, request: Request) -> Response:
    get_state(request).tm.abort_request(body.rid)
    return Response(status_code=200)


@router.post("/parse_function_call", name="parse_function_call")
@router.post("/function_call")
async def parse_function_call(body: FunctionCallRequest, request: Request) -> Dict[str, Any]:
    """Tool calls in a text (SGLang's /function_call, later /parse_function_call)."""
    from sgl.runtime.function_call.formats import get_format, parse_tools
    from sgl.runtime.function_call.parsers import parse_tool_calls

    state = get_state(request)
    try:
        tools = parse_tools(body.tools)
    except ValueError as e:
        raise ApiError(str(e), 400, "tools") from None
    parser = body.tool_call_parser or state.server_args.tool_call_parser
    try:
        fmt = get_format(parser, "tool_call_parser") if parser else None
    except ValueError as e:
        raise ApiError(str(e), 400, "tool_call_parser") from None
    names = [t.name for t in tools]
    normal, calls = parse_tool_calls(body.text, fmt, names)
    return {"normal_text": normal,
            "calls": [{"tool_index": names.index(c.name), "name": c.name, "parameters": c.arguments} for c in calls]}
