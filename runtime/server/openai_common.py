"""What the two OpenAI routes share: sampling params from a request (including `response_format`
and per-choice seeds), finish reasons, logprobs, usage, and per-choice bookkeeping for streams."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sgl.runtime.sampling.params import GRAMMAR_FIELDS, SamplingParams, openai_params, rename_params
from sgl.runtime.server.errors import ApiError, guess_param
from sgl.runtime.server.protocol import OpenAIRequest, ResponseFormat

# The runtime's names for the OpenAI fields called otherwise, and all the fields' OpenAI names.
_OPENAI_NAMES = {spec.name: spec.alias for spec in openai_params() if spec.alias}
_PUBLIC = tuple(spec.public_name for spec in openai_params())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sampling_params(req: OpenAIRequest, temperature: Optional[float], max_new_tokens: Optional[int],
                    extra_stop: Sequence[str] = ()) -> Dict[str, Any]:
    """The runtime's sampling params for an OpenAI request (None fields take the runtime default);
    `temperature` and `max_new_tokens` are the request's, resolved with the route's defaults
    (`max_new_tokens` None: up to the limit, which the runtime works out per prompt)."""
    _reject_unsupported(req)
    declared = type(req).model_fields
    sp = {spec.name: getattr(req, spec.public_name) for spec in openai_params() if spec.public_name in declared}
    sp.update(temperature=temperature, stop=_stops(req.stop, extra_stop))
    sp.update(_response_format(req, sp))
    sp = {**{k: v for k, v in sp.items() if v is not None}, "max_new_tokens": max_new_tokens}
    _verify(sp)
    return sp


def _verify(sp: Dict[str, Any]) -> None:
    """The runtime's checks, here so that an error names the field as the client sent it."""
    try:
        SamplingParams.from_dict(sp).verify()
    except ValueError as e:
        message = rename_params(str(e), _OPENAI_NAMES)
        raise ApiError(message, 400, guess_param(message, _PUBLIC)) from None


def _reject_unsupported(req: OpenAIRequest) -> None:
    if req.lora_path is not None:
        raise ApiError("lora_path: LoRA adapters are not supported by this server", 400, "lora_path")
    if req.session_params is not None:
        raise ApiError("session_params: sessions are not supported by this server", 400, "session_params")


def _stops(stop: Any, extra: Sequence[str]) -> Optional[List[str]]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    stops += [s for s in extra if s not in stops]
    return stops or None


def _response_format(req: OpenAIRequest, sp: Dict[str, Any]) -> Dict[str, Any]:
    """`response_format` as the runtime's json_schema: any JSON object for json_object, the given
    schema for json_schema (enforced whether or not `strict` is set)."""
    fmt: Optional[ResponseFormat] = getattr(req, "response_format", None)
    if fmt is None or fmt.type == "text":
        return {}
    given = [name for name in GRAMMAR_FIELDS if sp.get(name) is not None]
    if given:
        raise ApiError(f"response_format cannot be combined with {given[0]}: both constrain the output", 400,
                       "response_format")
    if fmt.type == "json_object":
        return {"json_schema": json.dumps({"type": "object"})}
    if fmt.type == "structural_tag":
        return {"structural_tag": json.dumps({"structures": fmt.structures, "triggers": fmt.triggers})}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise ApiError("response_format: json_schema needs a schema", 400, "response_format")
    return {"json_schema": json.dumps(fmt.json_schema.schema_)}


def finish_fields(meta: Dict[str, Any]) -> Tuple[Optional[str], Any]:
    """OpenAI's finish_reason and SGLang's matched_stop (token id, stop string or None)."""
    reason = meta.get("finish_reason")
    if not reason:
        return None, None
    kind = reason.get("type")
    if kind == "stop":
        return "stop", reason.get("matched")
    return ("length", None) if kind == "length" else ("abort", None)


def usage(metas: List[Dict[str, Any]], n: int, cache_report: bool) -> Dict[str, Any]:
    """Prompt tokens count once per prompt, however many choices (n) it had."""
    firsts = metas[::n]
    prompt = sum(m.get("prompt_tokens", 0) for m in firsts)
    completion = sum(m.get("completion_tokens", 0) for m in metas)
    out: Dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cache_report:
        out["prompt_tokens_details"] = {"cached_tokens": sum(m.get("cached_tokens", 0) for m in firsts)}
    return out


# ---- logprobs ---------------------------------------------------------------------------------
def completion_logprobs(meta: Dict[str, Any], echo_len: Optional[int] = None) -> Dict[str, Any]:
    """Legacy completions logprobs of one choice, aligned with its text: with `echo_len` (the length
    of the echoed prompt text) the prompt tokens come first (the first one has no logprob), and
    the generated tokens' offsets start at `echo_len`; without it, only the generated tokens."""
    entries: List[Any] = list(meta.get("output_token_logprobs", []))
    tops: Optional[List[Any]] = meta.get("output_top_logprobs")
    offsets = _text_offsets(entries, 0 if echo_len is None else echo_len)
    if echo_len is not None:
        prompt = meta.get("input_token_logprobs", [])
        offsets = _text_offsets(prompt, 0) + offsets
        entries = prompt + entries
        if tops is not None:
            tops = list(meta.get("input_top_logprobs") or [None] * len(prompt)) + tops
    top = [_top_dict(row) for row in tops] if tops is not None else None
    return {"text_offset": offsets, "token_logprobs": [lp for lp, _, _ in entries],
            "tokens": [text or "" for _, _, text in entries], "top_logprobs": top}


def _text_offsets(entries: List[Any], start: int) -> List[int]:
    offsets = []
    for _, _, text in entries:
        offsets.append(start)
        start += len(text or "")
    return offsets


def _top_dict(row: Optional[List[Any]]) -> Optional[Dict[str, float]]:
    # The first prompt token has no alternatives (nothing comes before it): null, as in OpenAI.
    return None if row is None else {text or "": lp for lp, _, text in row}


def chat_logprobs(meta: Dict[str, Any], start: int) -> Dict[str, Any]:
    entries = meta.get("output_token_logprobs", [])[start:]
    tops = meta.get("output_top_logprobs") or []
    content = []
    for i, (lp, _, text) in enumerate(entries):
        row = tops[start + i] if start + i < len(tops) else []
        content.append({**_chat_token(lp, text), "top_logprobs": [_chat_token(a, t) for a, _, t in row]})
    return {"content": content}


def _chat_token(logprob: float, text: Optional[str]) -> Dict[str, Any]:
    text = text or ""
    return {"token": text, "bytes": list(text.encode("utf-8")), "logprob": logprob}


# ---- streams ----------------------------------------------------------------------------------
@dataclass
class ChoiceStream:
    """Progress of one choice in a stream: what was sent so far."""

    text_len: int = 0
    logprobs_sent: int = 0
    started: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)


class StreamTracker:
    def __init__(self) -> None:
        self.choices: Dict[int, ChoiceStream] = {}

    def update(self, out: Dict[str, Any]) -> Tuple[int, ChoiceStream, str]:
        """(choice index, its state, the new text) for one update from the runtime."""
        index = out.get("index", 0)
        choice = self.choices.setdefault(index, ChoiceStream())
        text = out.get("text", "")
        # Text only grows, except for a moment when the scheduler rewrites a request's output
        # (a structural tag's span opening inside a token): what was sent is a prefix of what
        # comes back, so nothing is sent until the text is longer again.
        delta = text[choice.text_len:]
        choice.text_len = max(choice.text_len, len(text))
        choice.meta = out.get("meta_info", {})
        return index, choice, delta

    def new_logprob_count(self, choice: ChoiceStream) -> int:
        return len(choice.meta.get("output_token_logprobs", [])) - choice.logprobs_sent

    def metas(self) -> List[Dict[str, Any]]:
        return [self.choices[i].meta for i in sorted(self.choices)]
