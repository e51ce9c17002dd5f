"""`/v1/completions`: OpenAI's legacy completions API over the runtime."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sgl.runtime.tokenizer.generate_input import GenerateReqInput
from sgl.runtime.server.errors import ApiError
from sgl.runtime.server.generation import check_fanout
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


def build_input(req: CompletionRequest) -> GenerateReqInput:
    _check_request(req)
    sp = sampling_params(req, req.temperature, req.max_tokens)
    text, ids = _prompt_fields(req.prompt)
    obj = GenerateReqInput(
        text=text, input_ids=ids, sampling_params=sp, return_logprob=req.logprobs is not None,
        top_logprobs_num=req.logprobs or 0, return_text_in_logprobs=True, stream=bool(req.stream),
        # echo with logprobs: the prompt's logprobs too, from its first token
        logprob_start_len=0 if req.echo and req.logprobs is not None else None,
    )
    check_fanout(obj.batch_size(), req.n)
    return obj


def _check_request(req: CompletionRequest) -> None:
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
    logprobs = completion_logprobs(meta, _echo_len(req, echo)) if req.logprobs is not None else None
    return {"index": index, "text": echo + out.get("text", ""), "logprobs": logprobs, "finish_reason": finish,
            "matched_stop": matched}


def _echo_len(req: CompletionRequest, echo: str) -> Optional[int]:
    return len(echo) if req.echo else None


class CompletionStream:
    """Turns runtime updates into `text_completion` chunks."""

    def __init__(self, req: CompletionRequest, echoes: List[str], rid: str, created: int, cache_report: bool):
        self.req, self.echoes, self.rid, self.created = req, echoes, rid, created
        self.cache_report = cache_report
        self.tracker = StreamTracker()

    def chunks(self, out: dict) -> List[Dict[str, Any]]:
        index, choice, delta = self.tracker.update(out)
        echo = _echo_for(self.echoes, index, self.req.n)
        if not choice.started:
            choice.started = True
            delta = echo + delta
        finish, matched = finish_fields(choice.meta)
        logprobs = self._logprobs(choice, echo)
        if not delta and finish is None and logprobs is None:
            return []
        return [self._chunk([{"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish,
                              "matched_stop": matched}])]

    def _logprobs(self, choice, echo: str) -> Optional[Dict[str, Any]]:
        """The logprobs not sent yet; offsets count from the start of the choice's whole text."""
        if self.req.logprobs is None:
            return None
        full = completion_logprobs(choice.meta, _echo_len(self.req, echo))
        sent, choice.logprobs_sent = choice.logprobs_sent, len(full["tokens"])
        if sent == len(full["tokens"]):
            return None
        return {key: (value[sent:] if value is not None else None) for key, value in full.items()}

    def tail(self) -> List[Dict[str, Any]]:
        options = self.req.stream_options
        if options is None or not options.include_usage:
            return []
        return [{**self._chunk([]), "usage": usage(self.tracker.metas(), self.req.n, self.cache_report)}]

    def _chunk(self, choices: list) -> Dict[str, Any]:
        return {"id": self.rid, "object": OBJECT, "created": self.created, "model": self.req.model,
                "choices": choices}
