"""Shared logic of the backends that speak SGLang's native `/generate` contract.

`RuntimeEndpoint` (HTTP) and `EngineBackend` (in-process engine) differ only in how a request
dict reaches the runtime; both subclass `SrtBackend` and implement `_send` / `_send_stream`.
Requests always carry the program's full text: prefix sharing is the server's radix cache's job.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from sgl.backend.base import BaseBackend
from sgl.chat_template import ChatTemplate, get_chat_template, get_chat_template_by_model_path
from sgl.choices import ChoicesDecision, ChoicesSamplingMethod
from sgl.global_config import global_config
from sgl.jinja_template import chat_template_from_model_info
from sgl.sampling import SglSamplingParams, apply_dtype

Request = Dict[str, Any]
Result = Dict[str, Any]


class SrtBackend(BaseBackend):
    """Implements gen / stream / select / prefix caching on top of `/generate` requests."""

    # The /generate SSE stream repeats the whole text in every event; SGLang's Engine (and
    # sgl.Engine) yield only the new text. Subclasses say which one they receive.
    stream_text_is_cumulative: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.model_info: Dict[str, Any] = {}

    # ---- transport (subclasses) -----------------------------------------------------------
    def _send(self, request: Request) -> Any:
        """Run one /generate request; return its result dict (or list for a batch)."""
        raise NotImplementedError

    def _send_stream(self, request: Request) -> Iterator[Result]:
        """Run a streaming request; yield result dicts (see `stream_text_is_cumulative`)."""
        raise NotImplementedError

    # ---- chat template ----------------------------------------------------------------------
    def _pick_chat_template(self, info: Dict[str, Any], name: Optional[str]) -> ChatTemplate:
        if name:
            return get_chat_template(name)
        fallback = get_chat_template_by_model_path(str(info.get("model_path") or ""))
        return chat_template_from_model_info(info, fallback)

    def get_model_name(self) -> str:
        return str(self.model_info.get("model_path", ""))

    # ---- requests ---------------------------------------------------------------------------
    def _base_request(self, s: Any, text: Any, sampling: Dict[str, Any]) -> Request:
        request: Request = {"text": text, "sampling_params": sampling}
        images = getattr(s, "images_", None)
        if images:
            if len(images) > 1:
                raise ValueError("This backend sends at most one image per request (SGLang's limit); "
                                 f"the program has {len(images)}")
            data = images[0][1]
            request["image_data"] = [data] * len(text) if isinstance(text, list) else data
        return request

    def _gen_request(self, s: Any, params: SglSamplingParams) -> Request:
        params = apply_dtype(params)
        sampling = {
            "skip_special_tokens": global_config.skip_special_tokens_in_output,
            "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
            **params.to_srt_kwargs(),
        }
        request = self._base_request(s, s.text_, sampling)
        request.update(params.logprob_fields())
        return request

    def _prefill(self, s: Any, text: str) -> Result:
        # max_new_tokens=0 runs only the prefill: the server caches the prefix and reports its length.
        return self._send(self._base_request(s, text, {"max_new_tokens": 0}))

    # ---- BaseBackend ------------------------------------------------------------------------
    def cache_prefix(self, prefix_str: str) -> None:
        self._send({"text": prefix_str, "sampling_params": {"max_new_tokens": 0}})

    def commit_lazy_operations(self, s: Any) -> None:
        self._prefill(s, s.text_)

    def fill_image(self, s: Any) -> None:
        self._prefill(s, s.text_)

    def generate(self, s: Any, sampling_params: SglSamplingParams) -> Tuple[str, Dict[str, Any]]:
        result = self._send(self._gen_request(s, sampling_params))
        return result["text"], result["meta_info"]

    def generate_stream(self, s: Any, sampling_params: SglSamplingParams) -> Iterator[Tuple[str, Dict[str, Any]]]:
        request = self._gen_request(s, sampling_params)
        request["stream"] = True
        seen = 0
        for result in self._send_stream(request):
            text = result.get("text", "")
            if self.stream_text_is_cumulative:
                text, seen = text[seen:], max(seen, len(text))
            yield text, result.get("meta_info", {})

    def select(self, s: Any, choices: List[str], temperature: float,
               choices_method: ChoicesSamplingMethod) -> ChoicesDecision:
        if temperature > 1e-5:
            raise ValueError(f"select temperature must be 0 (scoring is deterministic), got {temperature}")
        prompt_len = self._prefill(s, s.text_)["meta_info"]["prompt_tokens"]
        scored = self._score_choices(s, choices, prompt_len)
        unconditional = None
        if choices_method.requires_unconditional_logprobs:
            unconditional = self._unconditional_logprobs(scored["input_token_logprobs"])
        return choices_method(choices=choices, unconditional_token_logprobs=unconditional, **scored)

    def _score_choices(self, s: Any, choices: List[str], prompt_len: int) -> Dict[str, List[Any]]:
        # Start two tokens early: tokenizing prompt+choice may merge tokens across the boundary
        # ("token healing"), and the merged token must be scored too.
        start = max(prompt_len - 2, 0)
        request = self._base_request(s, [s.text_ + c for c in choices], {"max_new_tokens": 0, "temperature": 0})
        request.update(return_logprob=True, return_text_in_logprobs=True, logprob_start_len=start)
        results = _as_list(self._send(request))
        inputs = [choice_token_logprobs(r["meta_info"], s.text_, prompt_len, start) for r in results]
        return {
            "normalized_prompt_logprobs": [mean_logprob(lps) for lps in inputs],
            "input_token_logprobs": inputs,
            "output_token_logprobs": [r["meta_info"].get("output_token_logprobs", []) for r in results],
        }

    def _unconditional_logprobs(self, input_token_logprobs: List[List[Any]]) -> List[List[Any]]:
        ids = [[entry[1] for entry in option] for option in input_token_logprobs]
        request = {"input_ids": ids, "sampling_params": {"max_new_tokens": 0},
                   "return_logprob": True, "logprob_start_len": 0}
        results = _as_list(self._send(request))
        return [r["meta_info"]["input_token_logprobs"] for r in results]


def _as_list(value: Any) -> List[Result]:
    return value if isinstance(value, list) else [value]


def mean_logprob(entries: List[Any]) -> float:
    values = [entry[0] for entry in entries if entry[0] is not None]
    return sum(values) / len(values) if values else float("-inf")


def choice_token_logprobs(meta: Dict[str, Any], prompt: str, prompt_len: int, start: int) -> List[Any]:
    """The logprob entries of the choice's own tokens (plus a healed boundary token).

    The entries cover the last tokens of prompt+choice. Which token the first entry belongs to
    depends on the server's convention (SGLang v0.4 starts at `start + 1`; later versions at
    `start` with a None pad), so it is derived from the count: the full text has
    `prompt_tokens` tokens and the entries are its last `len(entries)` ones. Entries before
    position `prompt_len - 1` are prompt tokens. The entry at `prompt_len - 1` is the prompt's
    last token unless tokenization merged it with the choice: as in SGLang, it is dropped when
    the prompt text ends with its text.
    """
    entries = list(meta.get("input_token_logprobs") or [])
    first_pos = int(meta.get("prompt_tokens", len(entries) + start)) - len(entries)
    entries = entries[max(0, (prompt_len - 1) - first_pos):]
    if entries and _is_prompt_token(entries[0], prompt):
        entries = entries[1:]
    return entries


def _is_prompt_token(entry: Any, prompt: str) -> bool:
    text = entry[2] if len(entry) > 2 else None
    if text is None:
        return True  # no text to check (a server without token text): assume no merge happened
    return prompt.endswith(text)
