"""Model backends of the frontend language.

`RuntimeEndpoint` (HTTP to a server), `EngineBackend` (in-process engine) and `OpenAI` (any
OpenAI-compatible API). Heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from sgl.backend.base import BaseBackend

_LAZY = {
    "RuntimeEndpoint": "sgl.backend.runtime_endpoint",
    "EngineBackend": "sgl.backend.engine",
    "OpenAI": "sgl.backend.openai",
}

__all__ = ["BaseBackend", "as_backend", *_LAZY]


def as_backend(obj: Any) -> BaseBackend:
    """Adapt what users pass as a backend: a Runtime becomes its endpoint, an engine is wrapped."""
    if isinstance(obj, BaseBackend):
        return obj
    endpoint = getattr(obj, "endpoint", None)
    if isinstance(endpoint, BaseBackend):
        return endpoint
    from sgl.backend.engine import EngineBackend, is_engine_like

    if is_engine_like(obj):
        cached = getattr(obj, "_sgl_backend", None)
        if cached is None:
            cached = EngineBackend(obj)
            try:
                obj._sgl_backend = cached  # reuse one adapter (and its chat template) per engine
            except AttributeError:
                pass
        return cached
    raise ValueError(f"backend must be a backend, a Runtime or an engine with generate(), got {type(obj).__name__}")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sgl.backend' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
