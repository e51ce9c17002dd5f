"""`/v1/chat/completions`: chat prompts through the chat template, then the runtime."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sgl.runtime.tokenizer.generate_input import GenerateReqInput
from sgl.runtime.server.chat_templates import render_chat
from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.openai_common import (
    StreamTracker,
    chat_logprobs,
    finish_fields,
    sampling_params,
    usage,
)
from sgl.runtime.function_call.prompt import prepare_messages
from sgl.runtime.server import openai_tools
from sgl.runtime.server.openai_tools import ToolPlan, ToolStream
from sgl.runtime.server.protocol import CHAT_TEMPERATURE, ChatCompletionRequest, ChatMessage
from sgl.runtime.server.state import ServerState

OBJECT = "chat.completion"
CHUNK_OBJECT = "chat.completion.chunk"


def build_input(req: ChatCompletionRequest, state: ServerState) -> Tuple[GenerateReqInput, Optional[ToolPlan]]:
    """The runtime request, and the tool plan (None without tools) the response is read with."""
    _check_request(req, state)
    plan = openai_tools.plan_tools(req, state.chat_template.source, state.server_args.tool_call_parser)
    messages = [_message_dict(m) for m in req.messages]
    fmt, has_tools = openai_tools.served_format(state.chat_template.source, state.server_args.tool_call_parser)
    offered = plan.tools if plan is not None and plan.mode != "none" else None
    messages, template_tools = prepare_messages(messages, offered, fmt if plan is None else plan.fmt, has_tools)
    prompt = render_chat(state.chat_template, state.tokenizer, messages, template_tools)
    # The template writes any BOS itself; encoding must not add another.
    ids = state.tokenizer.encode(prompt, add_special_tokens=False)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    temperature = CHAT_TEMPERATURE if req.temperature is None else req.temperature
    sp = sampling_params(req, temperature, max_tokens, state.chat_template.stop)
    if plan is not None:
        openai_tools.constrain(plan, sp, state.server_args.constrained_json_whitespace_pattern)
    obj = GenerateReqInput(
        input_ids=ids, sampling_params=sp, return_logprob=bool(req.logprobs),
        top_logprobs_num=req.top_logprobs or 0, return_text_in_logprobs=True, stream=bool(req.stream),
    )
    return obj, plan


def _check_request(req: ChatCompletionRequest, state: ServerState) -> None:
    if state.tokenizer is None or state.chat_template is None:
        raise ApiError("This server has no chat template (no tokenizer template and no --chat-template)", 400,
                       "messages")
    if req.top_logprobs and not req.logprobs:
        raise ApiError("top_logprobs requires logprobs to be true", 400, "top_logprobs")


def _message_dict(message: ChatMessage) -> Dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    out: Dict[str, Any] = {"role": role, "content": _content_text(message.content)}
    for key in ("name", "tool_calls", "tool_call_id"):
        value = getattr(message, key)
        if value is not None:
            out[key] = value
    return out


def _content_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type != "text":
            raise ApiError("messages: this model is text-only (image_url parts are not supported)", 400, "messages")
        parts.append(part.text or "")
    return "\n".join(parts)


def response(req: ChatCompletionRequest, results: List[dict], rid: str, created: int,
             cache_report: bool, plan: Optional[ToolPlan] = None) -> Dict[str, Any]:
    choices = [_choice(i, out, req, plan) for i, out in enumerate(results)]
    metas = [out["meta_info"] for out in results]
    return {"id": rid, "object": OBJECT, "created": created, "model": req.model, "choices": choices,
            "usage": usage(metas, req.n, cache_report)}


def _choice(index: int, out: dict, req: ChatCompletionRequest, plan: Optional[ToolPlan]) -> Dict[str, Any]:
    meta = out["meta_info"]
    finish, matched = finish_fields(meta)
    message, has_calls = openai_tools.message(plan, out.get("text", ""))
    return {"index": index, "message": message,
            "logprobs": chat_logprobs(meta, 0) if req.logprobs else None,
            "finish_reason": openai_tools.finish_reason(finish, has_calls), "matched_stop": matched}


class ChatStream:
    """Turns runtime updates into `chat.completion.chunk`s: a role chunk first for each choice;
    with tools, each choice's text goes through a streaming tool-call parser."""

    def __init__(self, req: ChatCompletionRequest, rid: str, created: int, cache_report: bool,
                 plan: Optional[ToolPlan] = None):
        self.req, self.rid, self.created, self.cache_report = req, rid, created, cache_report
        self.tracker = StreamTracker()
        self.plan = plan if plan is not None and plan.mode != "none" else None
        self.tools: Dict[int, ToolStream] = {}

    def chunks(self, out: dict) -> List[Dict[str, Any]]:
        index, choice, delta = self.tracker.update(out)
        chunks = []
        if not choice.started:
            choice.started = True
            chunks.append(self._chunk(index, {"role": "assistant", "content": ""}, None, None, None))
        finish, matched = finish_fields(choice.meta)
        logprobs = self._logprobs(choice)
        deltas = self._deltas(index, delta, finish is not None)
        if finish is not None and index in self.tools:
            finish = openai_tools.finish_reason(finish, self.tools[index].has_calls)
        for d in deltas[:-1]:
            chunks.append(self._chunk(index, d, None, None, None))
        last = deltas[-1] if deltas else {}
        if last or finish is not None or logprobs is not None:
            chunks.append(self._chunk(index, last, logprobs, finish, matched))
        return chunks

    def _deltas(self, index: int, text: str, final: bool) -> List[Dict[str, Any]]:
        if self.plan is None:
            return [{"content": text}] if text else []
        stream = self.tools.get(index)
        if stream is None:
            stream = self.tools[index] = ToolStream(self.plan)
        return stream.deltas(text, final)
    def _logprobs(self, choice) -> Optional[Dict[str, Any]]:
        new = self.tracker.new_logprob_count(choice)
        if not self.req.logprobs or new <= 0:
            return None
        sent = choice.logprobs_sent
        choice.logprobs_sent += new
        return chat_logprobs(choice.meta, sent)

    def tail(self) -> List[Dict[str, Any]]:
        options = self.req.stream_options
        if options is None or not options.include_usage:
            return []
        return [{"id": self.rid, "object": CHUNK_OBJECT, "created": self.created, "model": self.req.model,
                 "choices": [], "usage": usage(self.tracker.metas(), self.req.n, self.cache_report)}]

    def _chunk(self, index: int, delta: dict, logprobs: Any, finish: Optional[str], matched: Any) -> Dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish,
                  "matched_stop": matched}
        return {"id": self.rid, "object": CHUNK_OBJECT, "created": self.created, "model": self.req.model,
                "choices": [choice]}
