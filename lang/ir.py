"""The intermediate representation: expression nodes a program appends to its state.

`s += "text" + sgl.gen("x")` builds an `SglExprList([SglConstantText, SglGen])`; the
interpreter executes nodes in order, the tracer records them.
"""

from __future__ import annotations

import itertools
from typing import Any, List, Optional

from sgl.choices import ChoicesSamplingMethod
from sgl.sampling import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

# SGLang programs import the dtype regexes from the IR module (`from sglang.lang.ir import REGEX_INT`).
__all__ = [
    "REGEX_BOOL",
    "REGEX_FLOAT",
    "REGEX_INT",
    "REGEX_STR",
    "ARGUMENT_MARKER",
    "SglSamplingParams",
    "as_expr",
    "concatenate",
    "SglExpr",
    "SglExprList",
    "SglConstantText",
    "SglArgument",
    "SglGen",
    "SglSelect",
    "SglRoleBegin",
    "SglRoleEnd",
    "SglImage",
    "SglVideo",
    "SglVariable",
    "SglVarScopeBegin",
    "SglVarScopeEnd",
    "SglFork",
    "SglGetForkItem",
    "SglCommitLazy",
    "SglConcateAndAppend",
]

_node_ids = itertools.count()


class SglExpr:
    """Base node. `+` with a str or another node concatenates into an `SglExprList`."""

    def __init__(self) -> None:
        self.node_id = next(_node_ids)
        self.prev_node: Optional[SglExpr] = None
        self.pid: Optional[str] = None

    def __add__(self, other: Any) -> "SglExprList":
        return concatenate(self, as_expr(other, "right operand of +"))

    def __radd__(self, other: Any) -> "SglExprList":
        return concatenate(as_expr(other, "left operand of +"), self)

    def print_graph_dfs(self) -> str:
        """SSA-like listing of this node and everything it depends on."""
        lines: List[str] = []
        _dfs_lines(self, set(), lines)
        return "".join(lines)


def as_expr(value: Any, what: str = "value") -> SglExpr:
    if isinstance(value, SglExpr):
        return value
    if isinstance(value, str):
        return SglConstantText(value)
    raise ValueError(f"{what} must be a str or an sgl expression, got {type(value).__name__}")


def concatenate(a: SglExpr, b: SglExpr) -> "SglExprList":
    left = a.expr_list if isinstance(a, SglExprList) else [a]
    right = b.expr_list if isinstance(b, SglExprList) else [b]
    return SglExprList(left + right)


def _dfs_lines(node: Optional[SglExpr], seen: set, lines: List[str]) -> None:
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    _dfs_lines(node.prev_node, seen, lines)
    for child in getattr(node, "expr_list", ()):
        _dfs_lines(child, seen, lines)
    if isinstance(node, SglVariable):
        _dfs_lines(node.source, seen, lines)
    if node.prev_node is not None and not isinstance(node, (SglFork, SglGetForkItem)):
        lines.append(f"%{node.node_id} = %{node.prev_node.node_id} + {node!r}\n")
    else:
        lines.append(f"%{node.node_id} = {node!r}\n")


class SglExprList(SglExpr):
    def __init__(self, expr_list: List[SglExpr]) -> None:
        super().__init__()
        self.expr_list = expr_list

    def __repr__(self) -> str:
        return f"ExprList({self.expr_list})"


class SglConstantText(SglExpr):
    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"


ARGUMENT_MARKER = "\x00sgl-argument:"


class SglArgument(SglExpr):
    """A program argument seen by the tracer; its value is unknown (None) while tracing."""

    def __init__(self, name: str, value: Any) -> None:
        super().__init__()
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"Argument(name={self.name}, value={self.value!r})"

    def __len__(self) -> int:
        return len(self.value)

    def __getitem__(self, i: Any) -> Any:
        return self.value[i]

    def __int__(self) -> int:
        return self.value

    def __bool__(self) -> bool:
        return self.value

    def __str__(self) -> str:
        # str(arg) while tracing cannot know the value: leave a marker where the prefix must end.
        return f"{ARGUMENT_MARKER}{self.name}\x00"

    def __format__(self, *args: Any) -> str:
        # On purpose: an f-string would hide the argument from the tracer.
        raise TypeError("Cannot put an argument inside an f-string; this is not compatible with the tracer.")


class SglGen(SglExpr):
    def __init__(self, name: Optional[str], sampling_params: SglSamplingParams, tool_use: Any = None) -> None:
        super().__init__()
        self.name = name
        self.sampling_params = sampling_params
        self.tool_use = tool_use  # sgl.tools.ToolUse of a gen with tools: its calls are read back

    def __repr__(self) -> str:
        return f"Gen({self.name!r})"


class SglSelect(SglExpr):
    def __init__(self, name: Optional[str], choices: List[str], temperature: float,
                 choices_method: ChoicesSamplingMethod) -> None:
        super().__init__()
        self.name = name
        self.choices = choices
        self.temperature = temperature
        self.choices_method = choices_method

    def __repr__(self) -> str:
        return f"Select({self.name!r}, choices={self.choices}, choices_method={self.choices_method!r})"


class SglRoleBegin(SglExpr):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleBegin({self.role})"


class SglRoleEnd(SglExpr):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleEnd({self.role})"


class SglImage(SglExpr):
    def __init__(self, path: Any) -> None:
        super().__init__()
        self.path = path

    def __repr__(self) -> str:
        return f"SglImage({_short(self.path)})"


class SglVideo(SglExpr):
    def __init__(self, path: str, num_frames: int) -> None:
        super().__init__()
        self.path = path
        self.num_frames = num_frames

    def __repr__(self) -> str:
        return f"SglVideo({self.path}, {self.num_frames})"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return text if len(text) < 80 else text[:77] + "..."


class SglVariable(SglExpr):
    """A reference to a variable; while tracing, `s["x"]` returns one of these."""

    def __init__(self, name: str, source: Optional[SglExpr] = None, source_executor: Any = None) -> None:
        super().__init__()
        self.name = name
        self.source = source
        self.source_stream_executor = source_executor

    def __repr__(self) -> str:
        return f"Variable('{self.name}', source=%{self.source.node_id if self.source else None})"


class SglVarScopeBegin(SglExpr):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeBegin('{self.name}')"


class SglVarScopeEnd(SglExpr):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeEnd('{self.name}')"


class SglFork(SglExpr):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def __repr__(self) -> str:
        return f"Fork(%{self.prev_node.node_id if self.prev_node else None}, number={self.number})"


class SglGetForkItem(SglExpr):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def __repr__(self) -> str:
        return f"GetForkItem(%{self.prev_node.node_id if self.prev_node else None}, index={self.index})"


class SglCommitLazy(SglExpr):
    """Ask the backend to prefill (cache) the current text before forking."""

    def __repr__(self) -> str:
        return "CommitLazy()"


class SglConcateAndAppend(SglExpr):
    """Append the new text of forked states to the parent (join mode concate_and_append)."""

    def __init__(self, states: List[Any]) -> None:
        super().__init__()
        self.states = states

    def __repr__(self) -> str:
        return f"ConcateAndAppend({len(self.states)} states)"


def __getattr__(name: str) -> Any:
    # SGLang keeps SglFunction in its IR module; ours lives in sgl.function (imported lazily
    # here because sgl.function itself imports this module).
    if name == "SglFunction":
        from sgl.function import SglFunction

        return SglFunction
    raise AttributeError(f"module 'sgl.ir' has no attribute {name!r}")
