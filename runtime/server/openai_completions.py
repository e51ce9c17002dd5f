"""`/v1/completions`: OpenAI's legacy completions API over the runtime."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sgl.runtime.generate_input import GenerateReqInput
from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.generation import check_fanout, fill_open_max_tokens
from sgl.runtime.server.openai_common import (
    StreamTracker,
    completion_logprobs,
    finish_fields,
    sampling_params,
    usage,
)
from sgl.runtime.server.protocol import CompletionRequest
from sgl.runtime.server.state import ServerState

OBJECT = "text_completion"


def build_input(req: CompletionRequest, state: ServerState) -> GenerateReqInput:
    _check_request(req)
    temperature = 1.0 if req.temperature is None else req.temperature
    sp = sampling_params(req, temperature, req.max_tokens)
    if req.max_tokens is None:  # up to the context; resolved per prompt below
        sp["max_new_tokens"] = None
    text, ids = _prompt_fields(req.prompt)
    obj = GenerateReqInput(
        text=text, input_ids=ids, sampling_params=sp, return_logprob=req.logprobs is not None,
        top_logprobs_num=req.logprobs or 0, return_text_in_logprobs=True, stream=bool(req.stream),
    )
    check_fanout(obj.batch_size(), req.n)
    fill_open_max_tokens(obj, state)
    return obj


def _check_request(req: CompletionRequest) -> None:
    if req.echo and req.logprobs is not None:
        raise ApiError("echo together with logprobs is not supported", 400, "echo")
    if req.suffix:
        raise ApiError("suffix is not supported", 400, "suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise ApiError("best_of is not supported (it must be unset or equal to n)", 400, "best_of")


def _prompt_fields(prompt: Any) -> tuple:
    """(text, input_ids) for GenerateReqInput; a list prompt is always a batch here."""
    if isinstance(prompt, str):
        return prompt, None
    if not prompt:
        raise ApiError("prompt must not be empty", 400, "prompt")
    if isinstance(prompt[0], str):
        return list(prompt), None
    if isinstance(prompt[0], int):
        return None, [list(prompt)]
    return None, [list(p) for p in prompt]


def echo_texts(req: CompletionRequest, state: ServerState) -> List[str]:
    """The prompt text of each prompt, for `echo`."""
    if not req.echo:
        return []
    prompt = req.prompt
    prompts: List[Any] = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else list(prompt)
    if state.tokenizer is None and not all(isinstance(p, str) for p in prompts):
        raise ApiError("echo of token-id prompts needs a tokenizer", 400, "echo")
    return [p if isinstance(p, str) else state.tokenizer.decode(p) for p in prompts]


def response(req: CompletionRequest, results: List[dict], echoes: List[str], rid: str, created: int,
             cache_report: bool) -> Dict[str, Any]:
    choices = [_choice(i, out, req, _echo_for(echoes, i, req.n)) for i, out in enumerate(results)]
    metas = [out["meta_info"] for out in results]
    return {"id": rid, "object": OBJECT, "created": created, "model": req.model, "choices": choices,
            "usage": usage(metas, req.n, cache_report)}


def _echo_for(echoes: List[str], index: int, n: int) -> str:
    return echoes[index // n] if echoes else ""


def _choice(index: int, out: dict, req: CompletionRequest, echo: str) -> Dict[str, Any]:
    meta = out["meta_info"]
    finish, matched = finish_fields(meta)
    logprobs = completion_logprobs(meta, 0, 0) if req.logprobs is not None else None
    return {"index": index, "text": echo + out.get("text", ""), "logprobs": logprobs, "finish_reason": finish,
            "matched_stop": matched}


class CompletionStream:
    """Turns runtime updates into `text_completion` chunks."""

    def __init__(self, req: CompletionRequest, echoes: List[str], rid: str, created: int, cache_report: bool):
        self.req, self.echoes, self.rid, self.created = req, echoes, rid, created
        self.cache_report = cache_report
        self.tracker = StreamTracker()

    def chunks(self, out: dict) -> List[Dict[str, Any]]:
        index, choice, delta = self.tracker.update(out)
        if not choice.started:
            choice.started = True
            delta = _echo_for(self.echoes, index, self.req.n) + delta
        finish, matched = finish_fields(choice.meta)
        logprobs = self._logprobs(choice)
        if not delta and finish is None and logprobs is None:
            return []
        return [self._chunk([{"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish,
                              "matched_stop": matched}])]

    def _logprobs(self, choice) -> Optional[Dict[str, Any]]:
        if self.req.logprobs is None or self.tracker.new_logprob_count(choice) <= 0:
            return None
        sent = choice.logprobs_sent
        choice.logprobs_sent += self.tracker.new_logprob_count(choice)
        full = completion_logprobs(choice.meta, 0, 0)  # offsets count from the first output token
        return {key: (value[sent:] if value is not None else None) for key, value in full.items()}

    def tail(self) -> List[Dict[str, Any]]:
        options = self.req.stream_options
        if options is None or not options.include_usage:
            return []
        return [{**self._chunk([]), "usage": usage(self.tracker.metas(), self.req.n, self.cache_report)}]

    def _chunk(self, choices: list) -> Dict[str, Any]:
        return {"id": self.rid, "object": OBJECT, "created": self.created, "model": self.req.model,
                "choices": choices}
