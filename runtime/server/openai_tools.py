"""Function calling on `/v1/chat/completions`: `tools`, `tool_choice`, `parallel_tool_calls`.

The tools go into the prompt (the template's `tools` variable, or sgl's default block), the
output is constrained so calls are valid (`tool_choice` required or named: the whole output is
calls, one regex; auto: free text, with each call constrained from its first character on, a
structural tag), and the text is parsed back into OpenAI `tool_calls`, whole or streamed.
The formats, constraints and parsers are `sgl.runtime.function_call`.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from sgl.runtime.function_call.formats import (
    Tool,
    ToolFormat,
    chosen_tools,
    constraint,
    format_for_template,
    get_format,
    parse_tools,
)
from sgl.runtime.function_call.parsers import (
    ArgumentsDelta,
    CallBegin,
    ContentDelta,
    StreamingToolParser,
    parse_tool_calls,
)
from sgl.runtime.function_call.prompt import template_uses_tools
from sgl.runtime.sampling.params import GRAMMAR_FIELDS
from sgl.runtime.server.errors import ApiError


@dataclass
class ToolPlan:
    mode: str  # "none", "auto", "required" or "named"
    tools: List[Tool]  # every tool of the request
    allowed: List[Tool]  # those a call may use (one, for a named tool_choice)
    fmt: ToolFormat  # the format the prompt asks for and the constraint enforces
    parse_fmt: Optional[ToolFormat]  # the parser's format; None: every format
    template_has_tools: bool
    parallel: bool

    @property
    def names(self) -> List[str]:
        return [t.name for t in self.allowed]


@functools.lru_cache(maxsize=8)
def _uses_tools(source: Optional[str]) -> bool:
    return template_uses_tools(source)


def served_format(template_source: Optional[str], parser_flag: Optional[str]) -> Tuple[ToolFormat, bool]:
    """(the format this server's model writes calls in, whether its template renders tools)."""
    has_tools = _uses_tools(template_source)
    return (get_format(parser_flag) if parser_flag else format_for_template(template_source, has_tools)), has_tools


def plan_tools(req: Any, template_source: Optional[str], parser_flag: Optional[str]) -> Optional[ToolPlan]:
    """The request's tool plan, or None when it has no tools; a 400 for malformed tools."""
    if not req.tools:
        if req.tool_choice not in (None, "auto", "none"):
            raise ApiError("tool_choice needs tools", 400, "tool_choice")
        return None
    try:
        tools = parse_tools(req.tools)
    except ValueError as e:
        raise ApiError(str(e), 400, "tools") from None
    try:
        mode, allowed = chosen_tools(tools, req.tool_choice)
    except ValueError as e:
        raise ApiError(str(e), 400, "tool_choice") from None
    fmt, has_tools = served_format(template_source, parser_flag)
    # Without --tool-call-parser, free output is read with every parser (as SGLang does); a
    # constrained one is in the known format.
    parse_fmt = fmt if parser_flag or mode in ("required", "named") else None
    return ToolPlan(mode, tools, allowed, fmt, parse_fmt, has_tools, req.parallel_tool_calls is not False)


def constrain(plan: ToolPlan, sp: Dict[str, Any], whitespace_pattern: Optional[str]) -> None:
    """Add the calls' constraint to the sampling params `sp` (tool_choice other than none)."""
    if plan.mode == "none":
        return
    given = [name for name in GRAMMAR_FIELDS if sp.get(name) is not None]
    if given:
        raise ApiError(f"tools (tool_choice {plan.mode!r}) cannot be combined with {given[0]}: both constrain "
                       "the output; use tool_choice 'none' or drop the other constraint", 400, "tool_choice")
    from sgl.runtime.constrained.json_schema import json_schema_to_regex

    try:
        sp.update(constraint(plan.fmt, plan.mode, plan.allowed,
                             lambda schema: json_schema_to_regex(json.dumps(schema), whitespace_pattern), plan.parallel))
    except ValueError as e:  # a parameters schema the compiler cannot enforce
        raise ApiError(f"tools: {e}", 400, "tools") from None
    # special tokens can open a call (<|python_tag|>, [TOOL_CALLS]); the parser must see them
    sp["skip_special_tokens"] = False


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_call(name: str, arguments: str, index: Optional[int] = None) -> Dict[str, Any]:
    call: Dict[str, Any] = {"id": _call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
    return call if index is None else {"index": index, **call}


def message(plan: Optional[ToolPlan], text: str) -> Tuple[Dict[str, Any], bool]:
    """(the assistant message for `text`, whether it holds calls)."""
    if plan is None or plan.mode == "none":
        return {"role": "assistant", "content": text, "tool_calls": None}, False
    normal, calls = parse_tool_calls(text, plan.parse_fmt, plan.names)
    if not calls:
        return {"role": "assistant", "content": text, "tool_calls": None}, False
    return {"role": "assistant", "content": normal.strip() or None,
            "tool_calls": [_tool_call(c.name, c.arguments) for c in calls]}, True


def finish_reason(finish: Optional[str], has_calls: bool) -> Optional[str]:
    return "tool_calls" if has_calls and finish == "stop" else finish


class ToolStream:
    """One choice's text deltas as chat deltas: content, or tool_calls in OpenAI's stream form."""

    def __init__(self, plan: ToolPlan):
        self.parser = StreamingToolParser(plan.parse_fmt, plan.names)
        self.has_calls = False

    def deltas(self, text: str, final: bool) -> List[Dict[str, Any]]:
        events = self.parser.feed(text) if text else []
        if final:
            events += self.parser.finish()
        out: List[Dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, ContentDelta):
                if not ev.text:
                    continue
                if out and "content" in out[-1]:
                    out[-1]["content"] += ev.text
                else:
                    out.append({"content": ev.text})
            elif isinstance(ev, CallBegin):
                self.has_calls = True
                call = _tool_call(ev.name, "", ev.index)
                out.append({"tool_calls": [call]})
            elif isinstance(ev, ArgumentsDelta) and ev.text:
                out.append({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.text}}]})
        return out
