"""What the two OpenAI routes share: sampling params from a request, finish reasons, logprobs,
usage, and per-choice bookkeeping for streams."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.protocol import OpenAISampling


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sampling_params(req: OpenAISampling, temperature: float, max_new_tokens: Optional[int],
                    extra_stop: List[str] = (), extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The runtime's sampling params for an OpenAI request (None fields take the runtime default)."""
    _reject_unsupported(req)
    sp = {
        "max_new_tokens": max_new_tokens, "min_new_tokens": req.min_tokens, "stop": _stops(req.stop, extra_stop),
        "stop_token_ids": req.stop_token_ids, "temperature": temperature, "top_p": req.top_p, "top_k": req.top_k,
        "min_p": req.min_p, "frequency_penalty": req.frequency_penalty, "presence_penalty": req.presence_penalty,
        "repetition_penalty": req.repetition_penalty, "ignore_eos": req.ignore_eos,
        "skip_special_tokens": req.skip_special_tokens, "no_stop_trim": req.no_stop_trim, "n": req.n,
        "regex": req.regex, "ebnf": req.ebnf, "json_schema": getattr(req, "json_schema", None), "seed": req.seed,
    }
    return {k: v for k, v in {**sp, **(extra or {})}.items() if v is not None}


def _reject_unsupported(req: OpenAISampling) -> None:
    if req.lora_path is not None:
        raise ApiError("lora_path: LoRA adapters are not supported by this server", 400, "lora_path")
    if req.session_params is not None:
        raise ApiError("session_params: sessions are not supported by this server", 400, "session_params")


def _stops(stop: Any, extra: List[str]) -> Optional[List[str]]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    stops += [s for s in extra if s not in stops]
    return stops or None


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
def completion_logprobs(meta: Dict[str, Any], start: int, offset: int) -> Dict[str, Any]:
    """Legacy completions logprobs for output tokens [start:]; offsets start at `offset`."""
    entries = meta.get("output_token_logprobs", [])[start:]
    tops = meta.get("output_top_logprobs")
    tokens = [text or "" for _, _, text in entries]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    top = [{text or "": lp for lp, _, text in row} for row in tops[start:]] if tops is not None else None
    return {"text_offset": offsets, "token_logprobs": [lp for lp, _, _ in entries], "tokens": tokens,
            "top_logprobs": top}


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
        delta = text[choice.text_len:]
        choice.text_len = len(text)
        choice.meta = out.get("meta_info", {})
        return index, choice, delta

    def new_logprob_count(self, choice: ChoiceStream) -> int:
        return len(choice.meta.get("output_token_logprobs", [])) - choice.logprobs_sent

    def metas(self) -> List[Dict[str, Any]]:
        return [self.choices[i].meta for i in sorted(self.choices)]
