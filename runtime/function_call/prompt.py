"""Tools in the chat prompt.

A chat template that takes a ``tools`` variable (Qwen 2.5, Llama 3.1, Mistral, Hermes...) renders
the tools itself, in the form its model was trained on. A template without one (the default
model's, plain ChatML) gets sgl's default tools block, added to the system message: the tools as
JSON, one per line, and how to write a call in the served format. Earlier turns are written so the
model sees its own calls: an assistant message's ``tool_calls`` become text in the format, and
``role: tool`` results are kept as they are (the template writes the role).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from sgl.runtime.function_call.formats import Tool, ToolFormat


def template_uses_tools(source: Optional[str]) -> bool:
    """Whether a Jinja chat template reads a ``tools`` variable."""
    if not source:
        return False
    try:
        from jinja2 import Environment, meta

        return "tools" in meta.find_undeclared_variables(Environment().parse(source))
    except Exception:  # a template jinja2 cannot parse on its own (custom tags): look at the text
        return "tools" in source


def tools_block(tools: Sequence[Tool], fmt: ToolFormat) -> str:
    """sgl's default description of the tools, for templates that do not render them."""
    listing = "\n".join(json.dumps(t.openai()["function"], ensure_ascii=False) for t in tools)
    example = fmt.calls_text([("function_name", '{"argument": "value"}')])
    return (
        "You can call functions. These are the functions, one JSON description per line:\n"
        f"{listing}\n\n"
        "To call a function, answer with the call and nothing after it, written exactly like this:\n"
        f"{example}\n"
        "Use a function's exact name, and give its arguments as a JSON object that follows its "
        "parameters. When no function helps, answer in plain text."
    )


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _call_pairs(tool_calls: List[Dict[str, Any]]) -> List[tuple]:
    pairs = []
    for call in tool_calls:
        fn = call.get("function") or {}
        pairs.append((fn.get("name", ""), _arguments_text(fn.get("arguments", "{}"))))
    return pairs


def _template_calls(tool_calls: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Calls as templates expect them: arguments as a dict (the OpenAI API sends a JSON string)."""
    out = []
    for call in tool_calls:
        fn = dict(call.get("function") or {})
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                fn["arguments"] = json.loads(args)
            except json.JSONDecodeError:
                pass
        out.append({**call, "function": fn})
    return out


def prepare_messages(messages: List[Dict[str, Any]], tools: Optional[Sequence[Tool]], fmt: ToolFormat,
                     template_has_tools: bool) -> tuple:
    """(messages, tools for the template's ``tools`` variable or None) for rendering."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if m["role"] == "assistant" and calls:
            if template_has_tools:
                m = {**m, "tool_calls": _template_calls(calls)}
            else:
                text = fmt.calls_text(_call_pairs(calls))
                m = {k: v for k, v in m.items() if k != "tool_calls"}
                m["content"] = (m.get("content") or "") + ("\n" if m.get("content") else "") + text
        out.append(m)
    if not tools:
        return out, None
    if template_has_tools:
        return out, [t.openai() for t in tools]
    block = tools_block(tools, fmt)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{block}".lstrip()}
    else:
        out.insert(0, {"role": "system", "content": block})
    return out, None
