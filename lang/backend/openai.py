"""`OpenAI`: run programs on any OpenAI-compatible API (OpenAI, Azure, or an sgl server's /v1).

Chat models get the program's `messages()`; a gen must directly follow `assistant` begin
(unless API speculation is on). Completion models get the raw text. SGLang's emulations:
  * dtype=str on completion models: generate after an opening quote, stop at the closing one;
  * dtype=int on completion models: logit_bias toward digit tokens (needs tiktoken);
  * select on completion models: one-token steps with logit_bias on each option's next token
    (needs tiktoken);
  * `@sgl.function(num_api_spec_tokens=N)`: one call serves several gens (see speculative.py
    for completion models; chat models defer an assistant turn's gens to its end).
json_schema on chat models is sent as `response_format`. Regex and the other cases raise
NotImplementedError naming what is unsupported.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from sgl.backend.base import BaseBackend
from sgl.chat_template import ChatTemplate, get_chat_template_by_model_path
from sgl.choices import ChoicesDecision, ChoicesSamplingMethod
from sgl.sampling import SglSamplingParams, dtype_name

logger = logging.getLogger(__name__)

INSTRUCT_MODEL_NAMES = ["gpt-3.5-turbo-instruct"]


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def reset(self) -> None:
        self.prompt_tokens = self.completion_tokens = 0


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise ImportError("The OpenAI backend needs the openai package: pip install openai") from None
    return openai


def _tiktoken_encoding(model_name: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return tiktoken.encoding_for_model(model_name)
    except KeyError:
        return tiktoken.get_encoding("cl100k_base")


class OpenAI(BaseBackend):
    retry_sleep_s: float = 5.0  # SGLang waits 5 s between the 3 tries on transient API errors
    max_retries: int = 3

    def __init__(self, model_name: str, is_chat_model: Optional[bool] = None,
                 chat_template: Optional[ChatTemplate] = None, is_azure: bool = False,
                 *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
        openai = _import_openai()
        self._openai = openai
        self.client = (openai.AzureOpenAI if is_azure else openai.OpenAI)(*args, **kwargs)
        self.model_name = model_name
        self.tokenizer = _tiktoken_encoding(model_name)
        self.chat_template = chat_template or get_chat_template_by_model_path(model_name)
        self.is_chat_model = model_name not in INSTRUCT_MODEL_NAMES if is_chat_model is None else is_chat_model
        self.chat_prefix = self.chat_template.get_prefix_and_suffix("assistant", [])[0]
        self.token_usage = TokenUsage()
        self.spec_kwargs: Dict[str, Any] = {}
        self.spec_format: List[Dict[str, Any]] = []
        self.spec_max_num_tries = 3

    def get_model_name(self) -> str:
        return self.model_name

    # ---- gen -----------------------------------------------------------------------------------
    def generate(self, s: Any, sampling_params: SglSamplingParams,
                 spec_var_name: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
        params = sampling_params
        _reject_regex(params)
        dtype = dtype_name(params.dtype)
        if dtype is None:
            if self.is_chat_model and s.num_api_spec_tokens is not None:
                return self._prepare_spec_execution(params, s.num_api_spec_tokens, spec_var_name)
            return self._complete(self._prompt(s), self._kwargs(params))
        if self.is_chat_model:
            raise NotImplementedError(f"dtype={dtype} gens need a completion model; {self.model_name} is a chat model")
        if dtype == "str":
            return self._gen_quoted(s, params)
        if dtype == "int":
            return self._gen_int(s, params)
        raise NotImplementedError(f"dtype={dtype} is not supported by the OpenAI backend (only int and str)")

    def _prompt(self, s: Any) -> Any:
        if not self.is_chat_model:
            return s.text_
        if not s.text_.endswith(self.chat_prefix):
            raise RuntimeError(
                "For OpenAI chat models, sgl.gen must be right after sgl.assistant begin. "
                "To put text before a gen inside the assistant turn, use API speculative execution: "
                "@sgl.function(num_api_spec_tokens=128)."
            )
        return s.messages_

    def _kwargs(self, params: SglSamplingParams) -> Dict[str, Any]:
        kwargs = params.to_openai_kwargs()
        if self.model_name.startswith(("o1", "o3")):
            kwargs["max_completion_tokens"] = kwargs.pop("max_tokens")
        if params.json_schema is not None:
            if not self.is_chat_model:
                raise NotImplementedError("json_schema needs a chat model with response_format on the OpenAI backend")
            import json

            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "output", "schema": json.loads(params.json_schema)}}
        return kwargs

    def _gen_quoted(self, s: Any, params: SglSamplingParams) -> Tuple[str, Dict[str, Any]]:
        kwargs = self._kwargs(params)
        kwargs["stop"] = '"'
        text, meta = self._complete(s.text_ + '"', kwargs)
        return '"' + text + '"', meta

    def _gen_int(self, s: Any, params: SglSamplingParams) -> Tuple[str, Dict[str, Any]]:
        if self.tokenizer is None:
            raise NotImplementedError("dtype=int on the OpenAI backend needs tiktoken (pip install tiktoken)")
        kwargs = self._kwargs(params)
        kwargs.update(stop=[" "], logit_bias=_int_logit_bias(self.tokenizer))
        return self._complete(s.text_, kwargs)

    # ---- API calls -------------------------------------------------------------------------------
    def _complete(self, prompt: Any, kwargs: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        response = self._with_retries(lambda: self._create(prompt, kwargs, stream=False))
        choice = response.choices[0]
        text = choice.message.content if self.is_chat_model else choice.text
        meta = {"finish_reason": choice.finish_reason, "id": response.id}
        if response.usage is not None:
            self._count(response.usage)
            meta.update(prompt_tokens=response.usage.prompt_tokens,
                        completion_tokens=response.usage.completion_tokens)
        return text or "", meta

    def _create(self, prompt: Any, kwargs: Dict[str, Any], stream: bool) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if not (k == "stop" and v is None)}
        if stream:
            kwargs.update(stream=True, stream_options={"include_usage": True})
        if self.is_chat_model:
            return self.client.chat.completions.create(model=self.model_name, messages=prompt, **kwargs)
        return self.client.completions.create(model=self.model_name, prompt=prompt, **kwargs)

    def _with_retries(self, call: Any) -> Any:
        transient = (self._openai.APIConnectionError, self._openai.RateLimitError, self._openai.InternalServerError)
        for attempt in range(self.max_retries):
            try:
                return call()
            except transient as e:
                if attempt == self.max_retries - 1:
                    raise
                logger.error("OpenAI API error: %s. Retrying in %.0f s.", e, self.retry_sleep_s)
                time.sleep(self.retry_sleep_s)
        raise AssertionError("unreachable")

    def _count(self, usage: Any) -> None:
        self.token_usage.prompt_tokens += usage.prompt_tokens or 0
        self.token_usage.completion_tokens += usage.completion_tokens or 0

    def generate_stream(self, s: Any, sampling_params: SglSamplingParams) -> Iterator[Tuple[str, Dict[str, Any]]]:
        _reject_regex(sampling_params)
        if sampling_params.dtype is not None:
            raise NotImplementedError("dtype gens cannot stream on the OpenAI backend")
        prompt, kwargs = self._prompt(s), self._kwargs(sampling_params)
        stream = self._with_retries(lambda: self._create(prompt, kwargs, stream=True))
        for chunk in stream:
            if chunk.usage is not None:
                self._count(chunk.usage)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta.content if self.is_chat_model else choice.text
            yield delta or "", {"finish_reason": choice.finish_reason}

    # ---- select --------------------------------------------------------------------------------
    def select(self, s: Any, choices: List[str], temperature: float,
               choices_method: ChoicesSamplingMethod) -> ChoicesDecision:
        """Logit-bias stepping (SGLang's method); `choices_method` does not apply here."""
        if self.is_chat_model:
            raise NotImplementedError("select/choices is not supported for chat models on the OpenAI backend; "
                                      "use a completion model such as gpt-3.5-turbo-instruct")
        if self.tokenizer is None:
            raise NotImplementedError("select on the OpenAI backend needs tiktoken (pip install tiktoken)")
        options = [self.tokenizer.encode(c) for c in choices]
        scores = self._logit_bias_scores(self.tokenizer.encode(s.text_), options, temperature)
        best = max(range(len(choices)), key=lambda i: (scores[i], -i))
        return ChoicesDecision(decision=choices[best], meta_info={"scores": scores})

    def _logit_bias_scores(self, prompt: List[int], options: List[List[int]], temperature: float) -> List[int]:
        scores = [0] * len(options)
        alive = [len(tokens) > 0 for tokens in options]
        for step in range(max(len(tokens) for tokens in options)):
            bias = {tokens[step]: 100 for tokens, ok in zip(options, alive) if ok}
            if not bias:
                break
            response = self.client.completions.create(model=self.model_name, prompt=prompt, logit_bias=bias,
                                                      max_tokens=1, temperature=temperature)
            if response.usage is not None:
                self._count(response.usage)
            token = self.tokenizer.encode(response.choices[0].text)[:1]
            for i, tokens in enumerate(options):
                hit = alive[i] and token == tokens[step:step + 1]
                scores[i] += int(hit)
                alive[i] = hit and step + 1 < len(tokens)
            if sum(alive) <= 1 or not token:
                break
            prompt = prompt + token
        return scores

    # ---- chat-model API speculation ---------------------------------------------------------------
    def _prepare_spec_execution(self, params: SglSamplingParams, num_tokens: int,
                                name: Optional[str]) -> Tuple[str, Dict[str, Any]]:
        kwargs = self._kwargs(params)
        self.spec_kwargs.setdefault("max_tokens", num_tokens)
        for key, value in kwargs.items():
            if key in ("stop", "max_tokens"):
                continue
            if self.spec_kwargs.setdefault(key, value) != value:
                raise ValueError(f"sampling parameter {key} must be the same for all gens of a speculated turn")
        self.spec_format.append({"kind": "gen", "text": "", "stop": kwargs.get("stop"), "name": name})
        return "", {}

    def spec_fill(self, value: str) -> None:
        self.spec_format.append({"kind": "fill", "text": value, "stop": None, "name": None})

    def role_end_generate(self, s: Any) -> None:
        """At the end of a speculated assistant turn: one call, then split it into the gens."""
        if not s.text_.endswith(self.chat_prefix):
            return
        if any(term["kind"] == "gen" for term in self.spec_format):
            for _ in range(self.spec_max_num_tries):
                text, _ = self._complete(s.messages_, dict(self.spec_kwargs))
                if _match_spec_format(self.spec_format, text):
                    break
        for term in self.spec_format:
            s.text_ += term["text"]
            if term["kind"] == "gen":
                s._set_result(term["name"], term["text"], {})
        self.spec_kwargs, self.spec_format = {}, []


def _match_spec_format(format_: List[Dict[str, Any]], text: str) -> bool:
    """Fill the gen slots of `format_` from `text`; False when the fixed text does not line up."""
    for i, term in enumerate(format_):
        if term["kind"] == "fill":
            if not text.startswith(term["text"]):
                return False
            text = text[len(term["text"]):]
            continue
        stops = [term["stop"]] if isinstance(term["stop"], str) else list(term["stop"] or [])
        cuts = [text.find(stop) for stop in stops if stop and text.find(stop) >= 0]
        if cuts:
            term["text"], text = text[:min(cuts)], text[min(cuts):]
        elif i == len(format_) - 1:
            term["text"], text = text, ""
        else:
            return False
    return True


def _reject_regex(params: SglSamplingParams) -> None:
    if params.regex is not None:
        raise NotImplementedError("regex-constrained gens are not supported by the OpenAI backend")
    if params.structural_tag is not None:  # also gen(tools=..., tool_choice="auto")
        raise NotImplementedError("structural_tag (and gen with tools) is not supported by the OpenAI backend; "
                                  "use sgl's runtime as the backend")


def _int_logit_bias(tokenizer: Any) -> Dict[int, int]:
    """+100 on up to 299 digit (or space) tokens plus end-of-text; OpenAI allows 300 entries."""
    ids: List[int] = []
    for token_id in range(tokenizer.n_vocab):
        try:
            piece = tokenizer.decode([token_id])
        except Exception:  # unused ids in the vocabulary
            continue
        if piece == " " or (piece and piece.isdigit()):
            ids.append(token_id)
            if len(ids) >= 299:
                break
    bias = {token_id: 100 for token_id in ids}
    bias[tokenizer.eot_token] = 100
    return bias
