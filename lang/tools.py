"""Function calling in sgl programs: offer tools to the model and read its calls back.

    TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {...}}}]

    @sgl.function
    def agent(s, question):
        s += sgl.system(sgl.tools_prompt(TOOLS))
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("reply", tools=TOOLS, tool_choice="required", max_tokens=128))
        for call in s.tool_calls("reply"):      # [{"id", "name", "arguments"}], arguments a JSON string
            ...

`tools` and `tool_choice` are those of the OpenAI API. With `tool_choice` "required" or a named
function (`{"type": "function", "function": {"name": "add"}}`), the generation is constrained to
calls, so their arguments always parse and validate against the function's `parameters`; with
"auto" the model may answer in text, and a call is constrained from its first character on (a
structural tag). The calls are written in the `tool_parser` form (default "qwen25":
`<tool_call>{...}</tool_call>`; also "llama3", "mistral", "json"), the form `tools_prompt`
describes; a model trained on another form gets its own template's tools prompt and that parser.
The constraint needs a backend that enforces regexes and structural tags (sgl's runtime, local or
over HTTP).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from sgl.runtime.function_call.formats import (
    ToolFormat,
    chosen_tools,
    constraint,
    get_format,
    parse_tools,
)
from sgl.runtime.function_call.prompt import tools_block

DEFAULT_PARSER = "qwen25"


@dataclass(frozen=True)
class ToolUse:
    """What a gen with tools needs to read its calls back."""

    fmt: ToolFormat
    names: Tuple[str, ...]


def tools_prompt(tools: List[Dict[str, Any]], tool_parser: Optional[str] = None) -> str:
    """A description of `tools` for the system message, asking for calls in `tool_parser`'s form."""
    return tools_block(parse_tools(tools), get_format(tool_parser or DEFAULT_PARSER, "tool_parser"))


def constrain(tools: Any, tool_choice: Any, tool_parser: Optional[str]) -> Tuple[Dict[str, str], Optional[ToolUse]]:
    """(sampling params to set: regex or structural_tag, the ToolUse) for a gen with tools."""
    fmt = get_format(tool_parser or DEFAULT_PARSER, "tool_parser")
    mode, allowed = chosen_tools(parse_tools(tools), tool_choice)
    if mode == "none":
        return {}, None
    from sgl.runtime.constrained.json_schema import json_schema_to_regex

    params = constraint(fmt, mode, allowed, lambda schema: json_schema_to_regex(json.dumps(schema)))
    return params, ToolUse(fmt, tuple(t.name for t in allowed))


def read_calls(use: ToolUse, text: str) -> List[Dict[str, Any]]:
    """The calls in a gen's text, as {"id", "name", "arguments"} (arguments: JSON text)."""
    from sgl.runtime.function_call.parsers import parse_tool_calls

    _, calls = parse_tool_calls(text, use.fmt, use.names)
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "name": c.name, "arguments": c.arguments} for c in calls]
