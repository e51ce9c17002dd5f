"""Request bodies as pydantic models: they validate types (a mismatch is a 400), reject unknown
fields by name, and are what `/openapi.json` documents. Response bodies are built as plain dicts by
the route modules.

Every sampling field (of `/generate`'s `sampling_params` and of the two OpenAI routes) is derived
from the one table, `sgl.runtime.sampling.params.PARAMS`, with its default; value ranges are
checked by `SamplingParams.verify`. Only the OpenAI routes' own defaults (`max_tokens`, chat's
`temperature`) and the bound on `n` are written here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from sgl.runtime.sampling.params import PARAMS, ParamSpec, openai_params

# Per-position alternatives; OpenAI caps top_logprobs at 20 and so do we (it bounds the work).
MAX_TOP_LOGPROBS = 20
# OpenAI's own bound on `n`; it also bounds the fan-out of one request.
MAX_N = 128
# The OpenAI routes' defaults that differ from the runtime's (SGLang's choices).
COMPLETION_MAX_TOKENS = 16
CHAT_TEMPERATURE = 0.7  # OpenAI's is 1.0

# Types the JSON schema should show instead of the dataclass's Python-side conveniences.
_TYPE_OVERRIDES = {
    "stop_token_ids": Optional[List[int]],
    "json_schema": Optional[Union[str, Dict[str, Any]]],
    "structural_tag": Optional[Union[str, Dict[str, Any]]],
}


def _json_type(spec: ParamSpec) -> Any:
    return _TYPE_OVERRIDES.get(spec.name, Optional[spec.annotation])


def _sampling_params_model() -> type[BaseModel]:
    fields = {spec.name: (_json_type(spec), spec.default) for spec in PARAMS.values()}
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


class EncodeRequest(BaseModel):
    """`/encode` and `/classify` (SGLang's EmbeddingReqInput): a prompt or a batch of prompts.
    `sampling_params` is accepted and ignored, as in SGLang (nothing is sampled)."""

    model_config = ConfigDict(extra="forbid")

    text: Optional[Union[str, List[str]]] = None
    input_ids: Optional[Union[List[int], List[List[int]]]] = None
    input_embeds: Optional[List[Any]] = None
    image_data: Optional[Union[str, List[Any]]] = None
    rid: Optional[Union[str, List[str]]] = None
    sampling_params: Optional[Union[Dict[str, Any], List[Dict[str, Any]]]] = None
    log_metrics: bool = True


class EmbeddingRequest(BaseModel):
    """`/v1/embeddings`. `input`: a text, texts, one prompt's token ids, or several prompts' ids."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: Union[str, List[str], List[int], List[List[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None


class FunctionCallRequest(BaseModel):
    """`/function_call` (SGLang v0.4.3; later `/parse_function_call`)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    tools: List[Dict[str, Any]]
    tool_call_parser: Optional[str] = None


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rid: str


# ---- OpenAI ---------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: Optional[bool] = False
    continuous_usage_stats: Optional[bool] = False


class OpenAIRequest(BaseModel):
    """What the two OpenAI routes share besides the sampling fields. An unknown field is a 400 that
    names it (messages and stream_options stay lenient: clients replay messages with extra keys)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    logit_bias: Optional[Dict[str, float]] = None  # accepted and ignored, as in SGLang
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    lora_path: Optional[Union[str, List[Optional[str]]]] = None  # SGLang extras, answered 400 for now
    session_params: Optional[Dict[str, Any]] = None


def _openai_sampling(name: str, exclude: tuple = (), **overrides: Any) -> type[OpenAIRequest]:
    """OpenAIRequest plus the sampling fields of the table under their OpenAI names, with the
    route's own defaults in `overrides`."""
    fields: Dict[str, Any] = {spec.public_name: (_json_type(spec), spec.default)
                              for spec in openai_params() if spec.name not in exclude}
    fields["n"] = (int, Field(1, ge=1, le=MAX_N))
    fields.update(overrides)
    return create_model(name, __base__=OpenAIRequest, **fields)


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[Dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: Optional[JsonSchemaFormat] = None
    # structural_tag (SGLang): free text, constrained from a trigger on
    structures: Optional[List[Dict[str, Any]]] = None
    triggers: Optional[List[str]] = None


_CompletionSampling = _openai_sampling("CompletionSampling", max_tokens=(Optional[int], COMPLETION_MAX_TOKENS))
# Chat has response_format instead of SGLang's json_schema extension.
_ChatSampling = _openai_sampling("ChatSampling", exclude=("json_schema",), max_tokens=(Optional[int], None),
                                 temperature=(Optional[float], CHAT_TEMPERATURE))


class CompletionRequest(_CompletionSampling):  # type: ignore[misc, valid-type]
    prompt: Union[str, List[str], List[int], List[List[int]]]
    best_of: Optional[int] = None
    echo: Optional[bool] = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: Optional[ResponseFormat] = None
    suffix: Optional[str] = None


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


class ChatCompletionRequest(_ChatSampling):  # type: ignore[misc, valid-type]
    messages: List[ChatMessage] = Field(..., min_length=1)
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: Optional[int] = None
    response_format: Optional[ResponseFormat] = None
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], Dict[str, Any]]] = "auto"
    parallel_tool_calls: Optional[bool] = True
