"""Request bodies as pydantic models: they validate types (a mismatch is a 400) and they are what
`/openapi.json` documents. Response bodies are built as plain dicts by the route modules.

The `/generate` sampling-params model is derived from the one `SamplingParams` dataclass, so the
parameter list exists once; value ranges are checked by `SamplingParams.verify`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from sgl.runtime.sampling.params import SamplingParams

# Per-position alternatives; OpenAI caps top_logprobs at 20 and so do we (it bounds the work).
MAX_TOP_LOGPROBS = 20
# OpenAI's own bound on `n`; it also bounds the fan-out of one request.
MAX_N = 128

# Types the JSON schema should show instead of the dataclass's Python-side conveniences.
_TYPE_OVERRIDES = {
    "stop_token_ids": Optional[List[int]],
    "json_schema": Optional[Union[str, Dict[str, Any]]],
}


def _sampling_params_model() -> type[BaseModel]:
    hints = typing.get_type_hints(SamplingParams)
    fields: Dict[str, Any] = {}
    for f in dataclasses.fields(SamplingParams):
        if not f.init:
            continue
        annotation = _TYPE_OVERRIDES.get(f.name, Optional[hints[f.name]])
        fields[f.name] = (annotation, f.default)
    return create_model("SamplingParamsInput", __config__=ConfigDict(extra="forbid"), **fields)


SamplingParamsInput = _sampling_params_model()


class GenerateRequest(BaseModel):
    """`/generate` (SGLang's GenerateReqInput); unknown fields are rejected by name."""

    model_config = ConfigDict(extra="forbid")

    text: Optional[Union[str, List[str]]] = None
    input_ids: Optional[Union[List[int], List[List[int]]]] = None
    input_embeds: Optional[List[Any]] = None
    image_data: Optional[Union[str, List[Any]]] = None
    sampling_params: Optional[Union[SamplingParamsInput, List[SamplingParamsInput]]] = None  # type: ignore[valid-type]
    rid: Optional[Union[str, List[str]]] = None
    return_logprob: Optional[Union[bool, List[bool]]] = None
    logprob_start_len: Optional[Union[int, List[int]]] = None
    top_logprobs_num: Optional[Union[int, List[int]]] = None
    return_text_in_logprobs: bool = False
    stream: bool = False
    log_metrics: bool = True
    modalities: Optional[List[str]] = None
    lora_path: Optional[Union[str, List[Optional[str]]]] = None
    session_params: Optional[Dict[str, Any]] = None
    custom_logit_processor: Optional[Union[str, List[Optional[str]]]] = None


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rid: str


# ---- OpenAI ---------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: Optional[bool] = False
    continuous_usage_stats: Optional[bool] = False


class SglExtras(BaseModel):
    """SGLang's extra sampling fields, accepted by both OpenAI routes."""

    top_k: Optional[int] = -1
    min_p: Optional[float] = 0.0
    min_tokens: Optional[int] = 0
    regex: Optional[str] = None
    ebnf: Optional[str] = None
    repetition_penalty: Optional[float] = 1.0
    stop_token_ids: Optional[List[int]] = None
    no_stop_trim: Optional[bool] = False
    ignore_eos: Optional[bool] = False
    skip_special_tokens: Optional[bool] = True
    lora_path: Optional[Union[str, List[Optional[str]]]] = None
    session_params: Optional[Dict[str, Any]] = None


class OpenAISampling(SglExtras):
    """Fields the two OpenAI routes share."""

    model: str
    frequency_penalty: Optional[float] = 0.0
    presence_penalty: Optional[float] = 0.0
    logit_bias: Optional[Dict[str, float]] = None  # accepted and ignored, as in SGLang
    n: int = Field(1, ge=1, le=MAX_N)
    seed: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    top_p: Optional[float] = 1.0
    user: Optional[str] = None


class CompletionRequest(OpenAISampling):
    prompt: Union[str, List[str], List[int], List[List[int]]]
    best_of: Optional[int] = None
    echo: Optional[bool] = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_tokens: Optional[int] = 16
    suffix: Optional[str] = None
    temperature: Optional[float] = 1.0
    json_schema: Optional[str] = None


class ImageUrl(BaseModel):
    url: str
    detail: Optional[str] = "auto"


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: Optional[str] = None
    image_url: Optional[ImageUrl] = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, List[ContentPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[List[Dict[str, Any]]] = None
    tool_call_id: Optional[str] = None


class JsonSchemaFormat(BaseModel):
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[Dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = False


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None


class ChatCompletionRequest(OpenAISampling):
    messages: List[ChatMessage] = Field(..., min_length=1)
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    response_format: Optional[ResponseFormat] = None
    temperature: Optional[float] = 0.7
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[str, Dict[str, Any]]] = "auto"
