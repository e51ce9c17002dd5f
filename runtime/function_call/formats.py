"""How each model family writes a tool call, and the constraints that make calls valid.

A *format* is the text around a call: Qwen 2.5 wraps each call's JSON in ``<tool_call>`` tags,
Mistral writes ``[TOOL_CALLS]`` and a JSON array, Llama 3.1 writes a bare JSON object with
``parameters``, and the generic ``json`` format a bare object with ``arguments``. The same
description serves three purposes:

- the parser (``parsers.py``) reads calls back out of the model's text;
- ``tool_choice`` ``required`` or a named function constrains the whole output to calls
  (``call_regex``), so the arguments always validate against the function's ``parameters``;
- ``tool_choice`` ``auto`` leaves the text free until a call begins (``structural_tag``): from the
  trigger on, the call is constrained (the scheduler's structural tags,
  ``sgl.runtime.constrained.structural_tag``).

Only the standard library is imported here (the frontend uses this module too).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

# OpenAI's rule for function names; a name is also written into prompts and regexes literally.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolFormat:
    name: str  # the --tool-call-parser value
    trigger: str  # the text that begins a call (or a block of calls)
    args_key: str  # the key of the arguments object inside a call
    call_prefix: str  # written before each call object (before the array for Mistral)
    call_suffix: str  # written after each call object (after the array for Mistral)
    separator: str  # between two calls
    array: bool = False  # the calls of one turn are one JSON array (Mistral)
    extra_prefixes: tuple = ()  # other openings the parser accepts (Llama's <|python_tag|>)

    def calls_text(self, calls: Sequence[tuple]) -> str:
        """Several (name, arguments) calls as one assistant turn."""
        bodies = [f'{{"name": {json.dumps(n)}, "{self.args_key}": {a}}}' for n, a in calls]
        if self.array:
            return f"{self.call_prefix}{self.separator.join(bodies)}{self.call_suffix}"
        return self.separator.join(f"{self.call_prefix}{b}{self.call_suffix}" for b in bodies)


FORMATS: Dict[str, ToolFormat] = {
    "qwen25": ToolFormat("qwen25", "<tool_call>", "arguments", "<tool_call>\n", "\n</tool_call>", "\n"),
    "mistral": ToolFormat("mistral", "[TOOL_CALLS]", "arguments", "[TOOL_CALLS] [", "]", ", ", array=True),
    "llama3": ToolFormat("llama3", '{"name"', "parameters", "", "", "; ", extra_prefixes=("<|python_tag|>",)),
    "json": ToolFormat("json", '{"name"', "arguments", "", "", "\n"),
}
PARSER_NAMES = tuple(FORMATS)


def get_format(name: str, param: str = "--tool-call-parser") -> ToolFormat:
    if name not in FORMATS:
        raise ValueError(f"{param} must be one of {list(FORMATS)}, got {name!r}")
    return FORMATS[name]


def format_for_template(template_source: Optional[str], uses_tools: bool) -> ToolFormat:
    """The format a chat template teaches its model (when no --tool-call-parser is given).

    A template without a ``tools`` variable gets sgl's default tools block, which asks for the
    Qwen 2.5 form (``<tool_call>`` tags): the tags make a call easy to spot in free text."""
    source = template_source or ""
    if uses_tools:
        if "[TOOL_CALLS]" in source:
            return FORMATS["mistral"]
        if "<|python_tag|>" in source or ("<|eot_id|>" in source and '"parameters"' in source):
            return FORMATS["llama3"]
        if "<tool_call>" not in source and '"arguments"' in source:
            return FORMATS["json"]
    return FORMATS["qwen25"]


# ---- tools from a request -----------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: Dict[str, Any]  # a JSON schema for the arguments object

    def openai(self) -> Dict[str, Any]:
        """The OpenAI tool dict (what chat templates' ``tools`` variable expects)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def parse_tools(tools: Any) -> List[Tool]:
    """OpenAI ``tools`` as Tools; ValueError naming ``tools`` for anything malformed."""
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    out: List[Tool] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise ValueError(f"tools[{i}]: only tools of type 'function' are supported")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise ValueError(f"tools[{i}].function must be an object with a name")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-', got {name!r}")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
        description = fn.get("description") or ""
        if not isinstance(description, str):
            raise ValueError(f"tools[{i}].function.description must be a string")
        out.append(Tool(name, description, params))
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tools: function names must be unique, {dupes[0]!r} is repeated")
    return out


def chosen_tools(tools: List[Tool], tool_choice: Any) -> tuple:
    """(mode, tools the call may use): mode is "none", "auto", "required" or "named"."""
    if tool_choice is None or tool_choice == "auto":
        return "auto", tools
    if tool_choice in ("none", "required"):
        return tool_choice, tools
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if tool_choice.get("type", "function") == "function" and isinstance(name, str):
            match = [t for t in tools if t.name == name]
            if not match:
                raise ValueError(f"tool_choice names function {name!r}, which is not in tools")
            return "named", match
    raise ValueError("tool_choice must be 'none', 'auto', 'required' or "
                     "{'type': 'function', 'function': {'name': ...}}")


# ---- constraints ------------------------------------------------------------------------------------
def _object_schema(params: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments schema, as an object: a schema that allows non-objects is narrowed to them."""
    if params.get("type") is None and not any(k in params for k in ("anyOf", "oneOf", "allOf", "$ref", "enum",
                                                                      "const")):
        return {**params, "type": "object"}
    return params


def call_schema(fmt: ToolFormat, tool: Tool) -> Dict[str, Any]:
    """JSON schema of one whole call object of ``tool`` (name first, then the arguments)."""
    return {"type": "object",
            "properties": {"name": {"const": tool.name}, fmt.args_key: _object_schema(tool.parameters)},
            "required": ["name", fmt.args_key], "additionalProperties": False}


def structures(fmt: ToolFormat, tools: Sequence[Tool], parallel: bool = True) -> List[Dict[str, Any]]:
    """SGLang structural-tag structures ({begin, schema, end}) for calls of ``tools``."""
    if fmt.array:
        items = {"anyOf": [call_schema(fmt, t) for t in tools]} if len(tools) > 1 else call_schema(fmt, tools[0])
        array: Dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        # the prefix ends with the array's "[" and the suffix starts with its "]": the schema writes them
        return [{"begin": fmt.call_prefix[:-1], "schema": array, "end": fmt.call_suffix[1:]}]
    return [{"begin": f'{fmt.call_prefix}{{"name": {json.dumps(t.name)}, "{fmt.args_key}": ',
             "schema": _object_schema(t.parameters), "end": "}" + fmt.call_suffix} for t in tools]


def structural_tag(fmt: ToolFormat, tools: Sequence[Tool], parallel: bool = True) -> Dict[str, Any]:
    """``tool_choice: auto``: free text, and from the format's trigger on, a valid call."""
    return {"type": "structural_tag", "structures": structures(fmt, tools, parallel), "triggers": [fmt.trigger]}


def call_regex(fmt: ToolFormat, tools: Sequence[Tool], schema_regex, parallel: bool = True) -> str:
    """``tool_choice: required`` or named: the whole output is one or more calls of ``tools``
    (exactly one unless ``parallel``). ``schema_regex(schema_dict) -> str`` is the JSON-schema
    compiler of the grammar backend."""
    parts = [re.escape(s["begin"]) + schema_regex(s["schema"]) + re.escape(s["end"])
             for s in structures(fmt, tools, parallel)]
    one = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    if fmt.array or not parallel:
        return one
    return f"{one}(?:{re.escape(fmt.separator)}{one})*"


def constraint(fmt: ToolFormat, mode: str, tools: Sequence[Tool], schema_regex, parallel: bool = True) -> Dict[str, str]:
    """The sampling params that constrain calls for a ``tool_choice`` mode: nothing for "none", a
    structural tag for "auto", else a regex of the whole output (a named function is called once,
    OpenAI's meaning; "required" may call several unless not ``parallel``)."""
    if mode == "none":
        return {}
    if mode == "auto":
        return {"structural_tag": json.dumps(structural_tag(fmt, tools, parallel))}
    return {"regex": call_regex(fmt, tools, schema_regex, parallel and mode == "required")}
