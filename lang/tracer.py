"""Tracing: run a program body against a recording state to get its IR graph.

Arguments are dummy `SglArgument`s and reading a variable returns an `SglVariable` node, so
nothing is generated. `run_batch` uses a prefix-only trace to find the leading constant text
shared by all programs and caches it once.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional

from sgl.interpreter import ProgramState, ProgramStateGroup
from sgl.ir import (
    ARGUMENT_MARKER,
    SglArgument,
    SglConstantText,
    SglExpr,
    SglExprList,
    SglFork,
    SglGen,
    SglGetForkItem,
    SglRoleBegin,
    SglRoleEnd,
    SglSelect,
    SglVariable,
    SglVarScopeBegin,
    SglVarScopeEnd,
    as_expr,
)


class StopTracing(Exception):
    pass


class TracingScope:
    """The innermost active tracer; calling an SglFunction inside it traces instead of running."""

    cur_scope: Optional["TracingScope"] = None

    def __init__(self, tracer_state: "TracerProgramState") -> None:
        self.tracer_state = tracer_state
        self.last_scope = TracingScope.cur_scope

    def __enter__(self) -> "TracingScope":
        TracingScope.cur_scope = self
        return self

    def __exit__(self, *exc: Any) -> None:
        TracingScope.cur_scope = self.last_scope

    @staticmethod
    def get_current_scope() -> Optional["TracingScope"]:
        return TracingScope.cur_scope

    def add_child_state(self, state: "TracerProgramState") -> None:
        scope: Optional[TracingScope] = self
        while scope is not None:
            scope.tracer_state.child_states.append(state)
            scope = scope.last_scope


class TracerProgramState(ProgramState):
    def __init__(self, backend: Any, arguments: Dict[str, Any], only_trace_prefix: bool) -> None:
        super().__init__(stream_executor=None)  # type: ignore[arg-type]
        from sgl.backend.base import BaseBackend

        self.pid = uuid.uuid4().hex
        self.backend = getattr(backend, "endpoint", backend) or BaseBackend()
        self.arguments = arguments
        self.only_trace_prefix = only_trace_prefix
        self.nodes: List[SglExpr] = []
        self.last_node: Optional[SglExpr] = None
        self.variables: Dict[Any, Any] = {}
        self.messages_: List[Dict[str, Any]] = []
        self.cur_role: Optional[str] = None
        self.chat_template = self.backend.get_chat_template()
        self.child_states: List[TracerProgramState] = []
        scope = TracingScope.get_current_scope()
        if scope is not None:
            scope.add_child_state(self)

    # ---- ProgramState API -------------------------------------------------------------------
    def _submit(self, expr: Any) -> None:
        self._trace(as_expr(expr))

    def fork(self, size: int = 1, position_ids_offset: Optional[List[int]] = None) -> ProgramStateGroup:
        if self.only_trace_prefix:
            raise StopTracing()
        fork_node = SglFork(size)
        fork_node.prev_node = self.last_node
        states = [TracerProgramState(self.backend, self.arguments, self.only_trace_prefix) for _ in range(size)]
        for i, state in enumerate(states):
            item = SglGetForkItem(i)
            item.prev_node = fork_node
            state.last_node = item
            state.variables = dict(self.variables)
            state.messages_ = list(self.messages_)
            state.cur_role = self.cur_role
            state.chat_template = self.chat_template
        return ProgramStateGroup(states, self)

    def get_var(self, name: Any) -> Any:
        argument = self.arguments.get(name)
        if argument is not None:
            return argument
        variable = self.variables[name]
        return SglVariable(variable.name, variable.source)

    def set_var(self, name: Any, value: Any) -> None:
        self.variables[name] = value

    def text(self) -> str:
        return "".join(n.value for n in self.flatten_nodes() if isinstance(n, SglConstantText))

    def sync(self) -> None:
        pass

    def __contains__(self, name: Any) -> bool:
        return name in self.variables

    def __repr__(self) -> str:
        return f"TracerProgramState({len(self.nodes)} nodes)"

    # ---- recording ----------------------------------------------------------------------------
    def _trace(self, expr: SglExpr) -> None:
        expr.pid = self.pid
        handler = _TRACE_DISPATCH.get(type(expr))
        if handler is not None:
            handler(self, expr)
        elif self.only_trace_prefix:
            raise StopTracing()
        else:
            self._append_node(expr)

    def _append_node(self, expr: SglExpr) -> None:
        self.nodes.append(expr)
        expr.prev_node = self.last_node
        self.last_node = expr

    def _trace_list(self, expr: SglExprList) -> None:
        for child in expr.expr_list:
            self._trace(child)

    def _trace_gen(self, expr: Any) -> None:
        prefix = "gen_" if isinstance(expr, SglGen) else "select_"
        name = expr.name if expr.name is not None else prefix + str(len(self.variables))
        self.variables[name] = SglVariable(name, source=expr)
        self._append_node(expr)

    def _trace_role_begin(self, expr: SglRoleBegin) -> None:
        if self.cur_role is not None:
            raise ValueError(f"Nested roles are not allowed: {expr.role!r} begins inside {self.cur_role!r}")
        default_system = self.chat_template.default_system_prompt
        if not self.messages_ and expr.role != "system" and default_system:
            self._trace_role_begin(SglRoleBegin("system"))
            self._append_node(SglConstantText(default_system))
            self._trace_role_end(SglRoleEnd("system"))
        self.cur_role = expr.role
        prefix, _ = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self._append_node(SglConstantText(prefix))

    def _trace_role_end(self, expr: SglRoleEnd) -> None:
        _, suffix = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self._append_node(SglConstantText(suffix))
        self.messages_.append({"role": expr.role, "content": ""})
        self.cur_role = None

    def _trace_var_scope_begin(self, expr: SglVarScopeBegin) -> None:
        self._append_node(expr)

    def _trace_var_scope_end(self, expr: SglVarScopeEnd) -> None:
        self.variables[expr.name] = SglVariable(expr.name, source=self.last_node)
        self._append_node(expr)

    def flatten_nodes(self) -> List[SglExpr]:
        flat: List[SglExpr] = []
        for node in self.nodes:
            _flatten(node, flat)
        return flat


def _flatten(node: SglExpr, out: List[SglExpr]) -> None:
    if isinstance(node, SglExprList):
        for child in node.expr_list:
            _flatten(child, out)
    else:
        out.append(node)


_TRACE_DISPATCH = {
    SglConstantText: TracerProgramState._append_node,
    SglExprList: TracerProgramState._trace_list,
    SglGen: TracerProgramState._trace_gen,
    SglSelect: TracerProgramState._trace_gen,
    SglRoleBegin: TracerProgramState._trace_role_begin,
    SglRoleEnd: TracerProgramState._trace_role_end,
    SglVarScopeBegin: TracerProgramState._trace_var_scope_begin,
    SglVarScopeEnd: TracerProgramState._trace_var_scope_end,
}


def extract_prefix_by_tracing(program: Any, backend: Any) -> str:
    """The program's leading constant text (up to the first gen, select, fork, ...)."""
    arguments: Dict[str, Any] = {name: SglArgument(name, None) for name in program.arg_names}
    arguments.update(program.bind_arguments)
    tracer = TracerProgramState(backend, arguments, only_trace_prefix=True)
    try:
        with TracingScope(tracer):
            tracer.ret_value = program.func(tracer, **arguments)
    except (StopTracing, TypeError, AttributeError, ValueError, KeyError):
        pass  # dummy arguments make real code fail sooner or later; the prefix so far is what we need
    prefix = ""
    for node in tracer.flatten_nodes():
        if not isinstance(node, SglConstantText):
            break
        prefix += node.value
    return prefix.split(ARGUMENT_MARKER, 1)[0]  # text after str(argument) depends on the argument


def trace_program(program: Any, arguments: Dict[str, Any], backend: Any) -> TracerProgramState:
    arguments = dict(arguments)
    for name in program.arg_names:
        arguments.setdefault(name, SglArgument(name, None))
    arguments.update(program.bind_arguments)
    tracer = TracerProgramState(backend, arguments, only_trace_prefix=False)
    with TracingScope(tracer):
        tracer.ret_value = program.func(tracer, **arguments)
    return tracer
