"""Why a request stopped generating, and the scheduler's finish check.

The reason objects serialize (`to_json`) to the dicts SGLang puts in `meta_info["finish_reason"]`:
`{"type": "stop", "matched": <token id | str>}`, `{"type": "length", "length": N}` and
`{"type": "abort", "message", "status_code", "err_type"}`.

`check_finished` is SGLang's `Req.check_finished` as a pure function, in SGLang's order:
abort, then length, then a stop token (unless `ignore_eos`), then a stop string in the decoded tail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Optional, Sequence

from sgl.runtime.detokenizer.incremental import check_stop_str

if TYPE_CHECKING:
    from sgl.runtime.sampling.params import SamplingParams


class BaseFinishReason:
    """Common base so callers can write `isinstance(x, BaseFinishReason)`."""

    is_error: bool = False

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class FinishMatchedToken(BaseFinishReason):
    """The last generated token was EOS or one of `stop_token_ids`."""

    matched: int

    def to_json(self) -> dict[str, Any]:
        return {"type": "stop", "matched": self.matched}


@dataclass
class FinishMatchedStr(BaseFinishReason):
    """A stop string appeared in the decoded output."""

    matched: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "stop", "matched": self.matched}


@dataclass
class FinishLength(BaseFinishReason):
    """`max_new_tokens` (or the context limit) was reached."""

    length: int

    def to_json(self) -> dict[str, Any]:
        return {"type": "length", "length": self.length}


@dataclass
class FinishAbort(BaseFinishReason):
    """The request was aborted (client gone, bad input found late, server shutting down)."""

    message: str = "Unknown error"
    status_code: Optional[int] = None
    err_type: Optional[str] = None
    is_error = True

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "abort",
            "message": self.message,
            "status_code": self.status_code,
            "err_type": self.err_type,
        }


# SGLang's spellings, for code ported from or compared with the reference.
FINISH_MATCHED_TOKEN = FinishMatchedToken
FINISH_MATCHED_STR = FinishMatchedStr
FINISH_LENGTH = FinishLength
FINISH_ABORT = FinishAbort


def finish_reason_to_json(reason: Optional[BaseFinishReason | dict]) -> Optional[dict[str, Any]]:
    """None stays None (an unfinished stream); dicts pass through (already crossed a process)."""
    if reason is None or isinstance(reason, dict):
        return reason
    return reason.to_json()


def matched_stop_token(token_id: int, params: "SamplingParams", eos_token_ids: Collection[int] = ()) -> bool:
    """True when `token_id` ends the request: a stop token id or an EOS id, unless ignore_eos."""
    if params.ignore_eos:
        return False
    return token_id in (params.stop_token_ids or ()) or token_id in eos_token_ids


def check_finished(
    output_ids: Sequence[int],
    params: "SamplingParams",
    *,
    eos_token_ids: Collection[int] = (),
    tokenizer: Any = None,
    decoded_text: str = "",
    abort: Optional[FinishAbort] = None,
) -> Optional[BaseFinishReason]:
    """The finish reason for a request after its latest token, or None to keep going.

    `params` must be normalized (stop strings as a list, `stop_str_max_len` set). `eos_token_ids`
    holds the model's EOS ids (HF config, tokenizer, additional stop ids). Stop strings are looked
    for in the decoded last `stop_str_max_len + 1` tokens (a stop string can straddle tokens) and
    in `decoded_text` (text the scheduler already holds, e.g. after a jump-forward).
    """
    if abort is not None:
        return abort
    if params.max_new_tokens is not None and len(output_ids) >= params.max_new_tokens:
        return FinishLength(length=params.max_new_tokens)
    if not output_ids:
        return None
    last = int(output_ids[-1])
    if matched_stop_token(last, params, eos_token_ids):
        return FinishMatchedToken(matched=last)
    return _check_stop_strings(output_ids, params, tokenizer, decoded_text)


def _check_stop_strings(
    output_ids: Sequence[int], params: "SamplingParams", tokenizer: Any, decoded_text: str
) -> Optional[FinishMatchedStr]:
    stops = params.stop_strs
    if not stops:
        return None
    tail_text = ""
    if tokenizer is not None:
        tail_ids = list(output_ids[-(params.stop_str_max_len + 1) :])
        tail_text = tokenizer.decode(tail_ids)
    matched = check_stop_str(tail_text, stops, decoded_text)
    return None if matched is None else FinishMatchedStr(matched=matched)
