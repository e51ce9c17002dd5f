"""`ProgramState` (the `s` of a program) and `ProgramStateGroup` (the result of `s.fork(n)`)."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional

from sgl.executor import StreamExecutor
from sgl.ir import (
    SglConcateAndAppend,
    SglExpr,
    SglExprList,
    SglRoleBegin,
    SglRoleEnd,
    SglVarScopeBegin,
    SglVarScopeEnd,
    as_expr,
)

__all__ = ["ProgramState", "ProgramStateGroup", "StreamExecutor"]


class ProgramState:
    """The state of one running program: its text, messages and variables."""

    def __init__(self, stream_executor: StreamExecutor) -> None:
        self.stream_executor = stream_executor
        self.ret_value: Any = None

    def _submit(self, expr: SglExpr) -> None:
        self.stream_executor.submit(expr)

    # ---- appending ---------------------------------------------------------------------------
    def __iadd__(self, other: Any) -> "ProgramState":
        if other is None:
            raise ValueError("Tried to append None to the program state")
        self._submit(as_expr(other, "the value appended to the state"))
        return self

    def _role(self, name: str, expr: Optional[Any] = None) -> Any:
        if expr is not None:
            role_expr = SglExprList([SglRoleBegin(name), as_expr(expr, f"{name}() content"), SglRoleEnd(name)])
            self._submit(role_expr)
            return role_expr
        return self._role_scope(name)

    @contextmanager
    def _role_scope(self, name: str) -> Iterator[None]:
        self._submit(SglRoleBegin(name))
        yield
        self._submit(SglRoleEnd(name))

    def system(self, expr: Optional[Any] = None) -> Any:
        return self._role("system", expr)

    def user(self, expr: Optional[Any] = None) -> Any:
        return self._role("user", expr)

    def assistant(self, expr: Optional[Any] = None) -> Any:
        return self._role("assistant", expr)

    @contextmanager
    def var_scope(self, name: str) -> Iterator[None]:
        """Everything appended inside the block becomes variable `name`."""
        self._submit(SglVarScopeBegin(name))
        yield
        self._submit(SglVarScopeEnd(name))

    # ---- fork / join -------------------------------------------------------------------------
    def fork(self, size: int = 1, position_ids_offset: Optional[List[int]] = None) -> "ProgramStateGroup":
        executors = self.stream_executor.fork(size, position_ids_offset)
        return ProgramStateGroup([ProgramState(x) for x in executors], self)

    @contextmanager
    def copy(self, position_ids_offset: Optional[List[int]] = None) -> Iterator["ProgramState"]:
        group = self.fork(1, position_ids_offset)
        try:
            yield group[0]
        finally:
            group.join()

    # ---- reading -----------------------------------------------------------------------------
    def text(self) -> str:
        return self.stream_executor.text()

    def messages(self) -> List[Dict[str, Any]]:
        return self.stream_executor.messages()

    def sync(self) -> None:
        self.stream_executor.sync()

    def error(self) -> Optional[BaseException]:
        return self.stream_executor.error()

    def get_var(self, name: Any) -> Any:
        return self.stream_executor.get_var(name)

    def set_var(self, name: Any, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    def get_meta_info(self, name: Any) -> Any:
        return self.stream_executor.get_meta_info(name)

    def tool_calls(self, name: Any) -> list:
        """The calls of gen `name` made with `tools`: [{"id", "name", "arguments" (JSON text)}]."""
        meta = self.get_meta_info(name) or {}
        if "tool_calls" not in meta:
            raise ValueError(f"tool_calls: gen {name!r} was not given tools")
        return meta["tool_calls"]

    def __getitem__(self, name: Any) -> Any:
        return self.get_var(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        self.set_var(name, value)

    def __contains__(self, name: Any) -> bool:
        return name in self.stream_executor.variables

    def __repr__(self) -> str:
        return f"ProgramState({self.text()!r})"

    # ---- streaming ---------------------------------------------------------------------------
    def text_iter(self, var_name: Optional[str] = None) -> Iterator[str]:
        """Yield text as it is produced (all text, or one variable); once when not streaming."""
        exe = self.stream_executor
        if not exe.stream:
            yield self.text() if var_name is None else self.get_var(var_name)
            return
        for chunk, _ in _stream_pieces(exe, var_name):
            yield chunk

    async def text_async_iter(self, var_name: Optional[str] = None,
                              return_meta_data: bool = False) -> AsyncIterator[Any]:
        """Async `text_iter`; with `return_meta_data` it yields (chunk, meta_info) pairs."""
        exe = self.stream_executor
        if not exe.stream:
            value = self.text() if var_name is None else self.get_var(var_name)
            yield (value, self.get_meta_info(var_name)) if return_meta_data and var_name else value
            return
        loop = asyncio.get_running_loop()
        pieces = _stream_pieces(exe, var_name)
        while True:
            item = await loop.run_in_executor(None, _next_or_none, pieces)
            if item is None:
                return
            chunk, meta = item
            yield (chunk, meta) if return_meta_data else chunk


def _next_or_none(iterator: Iterator[Any]) -> Any:
    return next(iterator, None)


def _stream_pieces(exe: StreamExecutor, var_name: Optional[str]) -> Iterator[Any]:
    """(new text, meta_info) pieces of the whole text or of one variable, until it is final."""
    if var_name is None:
        yield from _watch(exe.stream_text_event, lambda: exe.text_, lambda: exe.is_finished, lambda: None)
        return
    event = exe.stream_var_event.get(var_name)
    while event is None:  # the body may not have submitted the gen yet
        if exe.is_finished:
            return
        exe.stream_text_event.wait(0.05)
        event = exe.stream_var_event.get(var_name)
    done = exe.variable_event[var_name]
    yield from _watch(event, lambda: exe.variables.get(var_name, ""), done.is_set,
                      lambda: exe.meta_info.get(var_name))


def _watch(event: Any, current: Callable[[], str], finished: Callable[[], bool],
           meta: Callable[[], Any]) -> Iterator[Any]:
    # `finished` is read before the value: once it is true, the value read after it is complete.
    seen = 0
    while True:
        event.wait()
        event.clear()
        is_final = finished()
        value = current()
        value = value if isinstance(value, str) else ""
        if len(value) > seen:
            yield value[seen:], meta()
            seen = len(value)
        if is_final:
            return


class ProgramStateGroup:
    """The children of `s.fork(n)`: index them, append to all of them, then `join()`."""

    def __init__(self, states: List[ProgramState], src_state: Optional[ProgramState] = None) -> None:
        self.states = states
        self.src_state = src_state

    def join(self, mode: str = "gather_variable") -> None:
        if mode == "gather_variable":
            self._gather_variables()
        elif mode == "concate_and_append":
            self.src_state += SglConcateAndAppend(self.states)
            self.src_state.sync()  # the children must outlive the concatenation
        else:
            raise ValueError(f"mode must be 'gather_variable' or 'concate_and_append', got {mode!r}")
        for state in self.states:
            state.stream_executor.end()

    def _gather_variables(self) -> None:
        # Variables a child created (absent in the parent at fork time) become lists on the parent.
        parent = self.src_state.stream_executor.variables
        known = set(parent)
        for state in self.states:
            state.stream_executor.sync()
            child = state.stream_executor.variables
            for name in [k for k in child if k not in known]:
                parent.setdefault(name, []).append(child[name])

    def __getitem__(self, i: int) -> ProgramState:
        return self.states[i]

    def __setitem__(self, i: int, value: ProgramState) -> None:
        # `forks[i] += x` assigns the (same) state back; anything else is a mistake.
        if value is not self.states[i]:
            raise ValueError("fork items cannot be replaced; use forks[i] += expr")

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.states)

    def __iadd__(self, other: Any) -> "ProgramStateGroup":
        if callable(other) and not isinstance(other, SglExpr):
            for i, state in enumerate(self.states):
                state += other(i)
        elif isinstance(other, (SglExpr, str)):
            for state in self.states:
                state += other
        elif isinstance(other, (list, tuple)):
            if len(other) != len(self.states):
                raise ValueError(f"expected one expression per fork ({len(self.states)}), got {len(other)}")
            for state, expr in zip(self.states, other):
                state += expr
        else:
            raise ValueError(f"cannot append a {type(other).__name__} to forks")
        return self
