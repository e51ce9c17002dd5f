"""The FastAPI application: native and OpenAI routes, auth, metrics, and error handling."""

from __future__ import annotations

import time
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.server import embedding_api, native_api, openai_api
from sgl.runtime.server.auth import ApiKeyMiddleware
from sgl.runtime.server.errors import install_exception_handlers
from sgl.runtime.server.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, GenerateRequest
from sgl.runtime.server.state import ServerState, get_state

# Names a ValueError message may start with; they become the error's "param".
KNOWN_PARAMS = (
    *SamplingParams.field_names(), *GenerateRequest.model_fields, *CompletionRequest.model_fields,
    *ChatCompletionRequest.model_fields, *EmbeddingRequest.model_fields, "sampling_params",
)


def create_app(state: ServerState) -> FastAPI:
    import sgl

    app = FastAPI(title="sgl", version=sgl.__version__, description="SGLang-compatible LLM server")
    app.state.sgl = state
    app.state.started_at = int(time.time())
    app.include_router(native_api.router)
    app.include_router(openai_api.router)
    app.include_router(embedding_api.router)
    if state.metrics is not None:
        app.add_api_route("/metrics", _metrics, methods=["GET"], response_class=PlainTextResponse)
    install_exception_handlers(app, KNOWN_PARAMS)
    if state.server_args.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=state.server_args.api_key)
    return app


async def _metrics(request: Request) -> PlainTextResponse:
    state = get_state(request)
    internal = await state.tm.get_internal_state()
    from sgl.runtime.server.metrics import CONTENT_TYPE

    return PlainTextResponse(state.metrics.render(internal), media_type=CONTENT_TYPE)


def make_state(server_args, core, tokenizer) -> ServerState:
    """Server-level settings derived from the args: chat template and metrics collector."""
    from sgl.runtime.server.chat_templates import resolve_chat_template
    from sgl.runtime.server.metrics import MetricsCollector

    template = resolve_chat_template(server_args.chat_template, tokenizer)
    metrics: Optional[MetricsCollector] = None
    if server_args.enable_metrics:
        metrics = MetricsCollector(server_args.served_model_name, native_api.HEALTH_RID_PREFIX)
    return ServerState(server_args, core, template, metrics)
