"""sgl: the frontend language (SGLang-compatible). Importing this package never imports torch.

Programs written for SGLang run unchanged after replacing `import sglang as sgl` with
`import sgl`. Backends and the runtime are loaded on first use (`sgl.Runtime`, `sgl.Engine`,
`sgl.RuntimeEndpoint`, `sgl.OpenAI`).
"""

from __future__ import annotations

import importlib
from typing import Any

from sgl.api import (
    assistant,
    assistant_begin,
    assistant_end,
    flush_cache,
    function,
    gen,
    gen_int,
    gen_string,
    get_server_info,
    image,
    select,
    set_default_backend,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
    video,
)
from sgl.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)
from sgl.global_config import global_config

__version__ = "0.1.0"

# Names resolved on first access, so `import sgl` stays light (no requests, openai or torch).
_LAZY = {
    "Runtime": ("sgl.server_process", "Runtime"),
    "RuntimeEndpoint": ("sgl.backend.runtime_endpoint", "RuntimeEndpoint"),
    "OpenAI": ("sgl.backend.openai", "OpenAI"),
    "EngineBackend": ("sgl.backend.engine", "EngineBackend"),
    "Engine": ("sgl.runtime.entry.engine", "Engine"),
    "tools_prompt": ("sgl.tools", "tools_prompt"),
}

__all__ = [
    "function", "gen", "gen_int", "gen_string", "select", "image", "video",
    "system", "user", "assistant", "system_begin", "system_end", "user_begin", "user_end",
    "assistant_begin", "assistant_end", "set_default_backend", "flush_cache", "get_server_info",
    "token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized",
    "global_config", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'sgl' has no attribute {name!r}")
    module, attr = target
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
