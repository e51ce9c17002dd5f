"""Routes of embedding and reward models: SGLang's `/encode` and `/classify`, and OpenAI's
`/v1/embeddings`.

`/v1/embeddings` answers `encoding_format` "float" (lists of numbers) or "base64" (the float32
little-endian bytes, what the official `openai` client asks for unless told otherwise).
`dimensions` is accepted only when it equals the model's embedding size: truncating would be
right only for Matryoshka-trained models, which this server cannot tell apart, so any other value
is a 400 naming the supported size.
"""

from __future__ import annotations

import base64
from typing import Any, List

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.generation import encode_once
from sgl.runtime.server.protocol import EmbeddingRequest, EncodeRequest
from sgl.runtime.server.responses import json_response
from sgl.runtime.server.state import get_state
from sgl.runtime.tokenizer.generate_input import GenerateReqInput, prompt_input

router = APIRouter()


@router.put("/encode", name="encode_put")
@router.post("/encode")
async def encode(body: EncodeRequest, request: Request) -> Response:
    obj = GenerateReqInput(text=body.text, input_ids=body.input_ids, input_embeds=body.input_embeds,
                           image_data=body.image_data, rid=body.rid, log_metrics=body.log_metrics)
    return json_response(await encode_once(get_state(request), obj, request))


@router.put("/classify", name="classify_put")
@router.post("/classify")
async def classify(body: EncodeRequest, request: Request) -> Response:
    """Reward / classification models: the score is in `embedding[0]` (one per label)."""
    return await encode(body, request)


@router.post("/v1/embeddings")
async def create_embeddings(req: EmbeddingRequest, request: Request) -> Response:
    state = get_state(request)
    results = await encode_once(state, prompt_input(req.input), request)
    results = results if isinstance(results, list) else [results]
    _check_dimensions(req.dimensions, len(results[0]["embedding"]))
    return json_response(embeddings_response(req, results, state.server_args.served_model_name))


def _check_dimensions(dimensions: Any, size: int) -> None:
    if dimensions is not None and dimensions != size:
        raise ApiError(f"dimensions: this model's embeddings have {size} dimensions and cannot be shortened; "
                       f"omit dimensions or pass {size}", 400, "dimensions")


def embeddings_response(req: EmbeddingRequest, results: List[dict], served_name: str) -> dict:
    prompt_tokens = sum(r["meta_info"]["prompt_tokens"] for r in results)
    data = [{"object": "embedding", "index": i, "embedding": _encode_vector(r["embedding"], req.encoding_format)}
            for i, r in enumerate(results)]
    return {"object": "list", "data": data, "model": req.model or served_name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def _encode_vector(vector: List[float], encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
