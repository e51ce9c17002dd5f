"""The text a request is routed by: its prompt, as one string.

`text` (native), `prompt` (completions), `input` (embeddings) and `messages` (chat, as JSON: the
system prompt comes first, so requests sharing it share a prefix) are used as they are; token ids
become their decimal text. A batch (a list of prompts) is routed whole, by its first prompt: one
worker gets the batch, so its prompts share that worker's cache and the reply keeps its order.
"""

from __future__ import annotations

import json
from typing import Any

_FIELDS = ("text", "prompt", "input", "messages", "input_ids")


def routing_text(body: Any) -> str:
    """The routing text of a JSON request body ("" when it has none; the worker will say why)."""
    if not isinstance(body, dict):
        return ""
    for name in _FIELDS:
        value = body.get(name)
        if value is not None:
            return _as_text(value, name)
    return ""


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if name == "messages":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, int):
            return " ".join(str(v) for v in value)
        return _as_text(first, name)  # a batch: its first prompt
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
