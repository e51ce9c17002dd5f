"""`EngineBackend`: run programs on an in-process engine (no HTTP).

Wraps any object with SGLang's `Engine.generate(prompt=..., sampling_params=..., input_ids=...,
image_data=..., return_logprob=..., logprob_start_len=..., top_logprobs_num=..., stream=...)`
returning `/generate`-shaped result dicts (`sgl.Engine`, or the test suite's fake engine).
`sgl.set_default_backend(engine)` wraps engines automatically.

The interpreter calls `generate` from several threads at once (one per program state and fork);
the engine must accept concurrent calls, which is also what lets it batch them.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterator, Optional

from sgl.backend.srt import Request, SrtBackend

# /generate request fields and the engine keyword each one maps to.
_FIELD_TO_KWARG = {
    "text": "prompt",
    "input_ids": "input_ids",
    "sampling_params": "sampling_params",
    "image_data": "image_data",
    "return_logprob": "return_logprob",
    "logprob_start_len": "logprob_start_len",
    "top_logprobs_num": "top_logprobs_num",
    "return_text_in_logprobs": "return_text_in_logprobs",
    "stream": "stream",
}


def is_engine_like(obj: Any) -> bool:
    """An engine object (not already a backend) that `EngineBackend` can drive."""
    from sgl.backend.base import BaseBackend

    return not isinstance(obj, BaseBackend) and callable(getattr(obj, "generate", None)) \
        and not hasattr(obj, "endpoint")


class EngineBackend(SrtBackend):
    stream_text_is_cumulative = False  # engines stream the new text only (as SGLang's Engine)

    def __init__(self, engine: Any, chat_template_name: Optional[str] = None) -> None:
        super().__init__()
        if not callable(getattr(engine, "generate", None)):
            raise ValueError(f"engine must have a generate() method, got {type(engine).__name__}")
        self.engine = engine
        self._accepted = _accepted_kwargs(engine.generate)
        self.model_info = _engine_model_info(engine)
        self.chat_template = self._pick_chat_template(self.model_info, chat_template_name)

    def _kwargs(self, request: Request) -> Dict[str, Any]:
        kwargs = {}
        for field, value in request.items():
            name = _FIELD_TO_KWARG.get(field)
            if name is None:
                raise ValueError(f"EngineBackend cannot forward request field {field!r}")
            if self._accepted is None or name in self._accepted:
                kwargs[name] = value
        return kwargs

    def _send(self, request: Request) -> Any:
        return self.engine.generate(**self._kwargs(request))

    def _send_stream(self, request: Request) -> Iterator[Dict[str, Any]]:
        yield from self.engine.generate(**self._kwargs(request))

    def flush_cache(self) -> Any:
        flush = getattr(self.engine, "flush_cache", None)
        return flush() if callable(flush) else None

    def get_server_info(self) -> Any:
        info = getattr(self.engine, "get_server_info", None)
        return info() if callable(info) else None

    def shutdown(self) -> None:
        stop = getattr(self.engine, "shutdown", None)
        if callable(stop):
            stop()


def _accepted_kwargs(func: Any) -> Optional[set]:
    """Keyword names `func` accepts, or None when it takes **kwargs (accepts anything)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _engine_model_info(engine: Any) -> Dict[str, Any]:
    """model_path and chat_template of an engine, from whichever accessor it offers.

    `get_model_info()` (the /get_model_info dict) is preferred. `get_server_info()` reports the
    --chat-template flag, which is None unless set; the template then is the tokenizer's own.
    """
    info = _info(engine, "get_model_info") or _info(engine, "get_server_info") or {}
    if info.get("chat_template") is None:
        info["chat_template"] = _tokenizer_template(engine)
    return info


def _info(engine: Any, accessor: str) -> Optional[Dict[str, Any]]:
    func = getattr(engine, accessor, None)
    if not callable(func):
        return None
    try:
        info = func()
    except Exception:  # an engine that cannot answer still works with a built-in template
        return None
    return dict(info) if isinstance(info, dict) else None


def _tokenizer_template(engine: Any) -> Optional[str]:
    for owner in (engine, getattr(engine, "tokenizer_manager", None)):
        source = getattr(getattr(owner, "tokenizer", None), "chat_template", None)
        if isinstance(source, dict):  # some tokenizers keep several named templates
            source = source.get("default")
        if isinstance(source, str) and source:
            return source
    return None
