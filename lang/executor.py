"""`StreamExecutor`: runs the expressions of one program state, in order, on its own thread.

`s += expr` only enqueues; the worker executes nodes through a dispatch table keyed by node
type. Named results get a `threading.Event` at submit time, so `s["x"]` can block until the
worker produces `x` while the Python body keeps running ahead ("lazy values").
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
import uuid
from typing import Any, Callable, Dict, List, Optional

from sgl.global_config import global_config
from sgl.ir import (
    SglCommitLazy,
    SglConcateAndAppend,
    SglConstantText,
    SglExpr,
    SglExprList,
    SglGen,
    SglImage,
    SglRoleBegin,
    SglRoleEnd,
    SglSelect,
    SglVariable,
    SglVarScopeBegin,
    SglVarScopeEnd,
    SglVideo,
)
from sgl.sampling import SglSamplingParams
from sgl.utils import encode_image_base64, encode_video_base64

logger = logging.getLogger(__name__)

_STOP = object()  # queue sentinel: the program body has finished submitting


class StreamExecutor:
    def __init__(self, backend: Any, arguments: Dict[str, Any], default_sampling_para: SglSamplingParams,
                 chat_template: Any = None, stream: bool = False, num_api_spec_tokens: Optional[int] = None,
                 use_thread: bool = True) -> None:
        self.sid = uuid.uuid4().hex
        self.backend = backend
        self.arguments = arguments
        self.default_sampling_para = default_sampling_para
        self.stream = stream
        self.num_api_spec_tokens = num_api_spec_tokens
        self.use_thread = use_thread

        self.variables: Dict[Any, Any] = {}
        self.variable_event: Dict[Any, threading.Event] = {}
        self.meta_info: Dict[Any, Any] = {}
        self.is_finished = False
        self.error_: Optional[BaseException] = None

        self.text_ = ""
        self.messages_: List[Dict[str, Any]] = []
        self.chat_template = chat_template or backend.get_chat_template()
        self.cur_role: Optional[str] = None
        self.cur_role_begin_pos: Optional[int] = None
        self.images_: List[Any] = []
        self.cur_images: List[Any] = []
        self.fork_start_text_pos: Optional[int] = None
        self.speculated_text = ""

        self.stream_text_event = threading.Event() if stream else None
        self.stream_var_event: Optional[Dict[Any, threading.Event]] = {} if stream else None
        self._lock = threading.Lock()
        self._ended = False
        self.queue: "queue.Queue[Any]" = queue.Queue()
        if use_thread:
            self.worker = threading.Thread(target=self._worker_loop, daemon=True, name=f"sgl-{self.sid[:8]}")
            self.worker.start()
        backend.begin_program(self)

    # ---- public API used by ProgramState ---------------------------------------------------
    def submit(self, expr: SglExpr) -> None:
        with self._lock:
            if self._ended:
                # The worker has stopped (run() returned, or the fork was joined): nothing would run it.
                raise RuntimeError("cannot append to a program state after its program has finished "
                                   "(or after its fork was joined)")
            self._init_var_events(expr)
            if self.error_ is not None:
                self._release_events()  # the worker is gone; readers must not wait forever
                return
            if self.use_thread:
                self.queue.put(expr)
                return
        self._run_guarded(expr)

    def sync(self) -> None:
        if self.use_thread:
            self.queue.join()

    def end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self.use_thread and self.error_ is None:
                self.queue.put(_STOP)
        if not self.use_thread:
            self._mark_finished()
        self.backend.end_program(self)

    def get_var(self, name: Any) -> Any:
        event = self.variable_event.get(name)
        if event is not None:
            event.wait()
        if name not in self.variables:
            if self.error_ is not None:
                raise RuntimeError(f"the program failed before producing {name!r}: {self.error_!r}") from self.error_
            raise KeyError(f"no variable named {name!r} in this program state")
        return self.variables[name]

    def set_var(self, name: Any, value: Any) -> None:
        self.variables[name] = value

    def get_meta_info(self, name: Any, timeout: Optional[float] = None) -> Any:
        event = self.variable_event.get(name)
        if event is not None and not event.wait(timeout):
            raise TimeoutError(f"Timeout while waiting for variable {name!r}")
        return self.meta_info.get(name)

    def text(self) -> str:
        self.sync()
        return self.text_

    def messages(self) -> List[Dict[str, Any]]:
        self.sync()
        return self.messages_

    def error(self) -> Optional[BaseException]:
        self.sync()
        return self.error_

    def fork(self, size: int = 1, position_ids_offset: Optional[List[int]] = None) -> List["StreamExecutor"]:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        if size > 1:
            self.submit(SglCommitLazy())  # prefill the shared prefix once, before the children race
        self.sync()
        children = [self._child() for _ in range(size)]
        self.backend.fork_program(self, children, position_ids_offset)
        return children

    def _child(self) -> "StreamExecutor":
        child = StreamExecutor(self.backend, self.arguments, self.default_sampling_para,
                               self.chat_template, self.stream, use_thread=self.use_thread)
        child.variables = dict(self.variables)
        child.text_ = self.text_
        child.messages_ = list(self.messages_)
        child.cur_role = self.cur_role
        child.cur_role_begin_pos = self.cur_role_begin_pos
        child.fork_start_text_pos = len(self.text_)
        child.images_ = list(self.images_)
        return child

    # ---- worker -------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            expr = self.queue.get()
            if expr is _STOP:
                self.queue.task_done()
                break
            failed = not self._run_guarded(expr)
            self.queue.task_done()
            if failed:
                break
            if self.stream_text_event:
                self.stream_text_event.set()
        self._mark_finished()

    def _run_guarded(self, expr: SglExpr) -> bool:
        try:
            self._execute(expr)
            return True
        except Exception as e:  # the error is reported through state.error() / s["x"]
            logger.warning("Error in stream_executor: %s", traceback.format_exc())
            with self._lock:
                self.error_ = e
                self._drain_queue()
                self._release_events()
            return False

    def _drain_queue(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
            self.queue.task_done()

    def _release_events(self) -> None:
        for event in self.variable_event.values():
            event.set()
        for event in (self.stream_var_event or {}).values():
            event.set()

    def _mark_finished(self) -> None:
        self.is_finished = True
        if self.stream_text_event:
            self.stream_text_event.set()
        for event in (self.stream_var_event or {}).values():
            event.set()

    def _init_var_events(self, expr: SglExpr) -> None:
        if isinstance(expr, (SglGen, SglSelect, SglVarScopeBegin)):
            self.variable_event[expr.name] = threading.Event()
            if self.stream_var_event is not None:
                self.stream_var_event[expr.name] = threading.Event()
        elif isinstance(expr, SglExprList):
            for child in expr.expr_list:
                self._init_var_events(child)

    # ---- dispatch ---------------------------------------------------------------------------
    def _execute(self, expr: Any) -> None:
        if isinstance(expr, str):
            expr = SglConstantText(expr)
        handler = _handler_for(type(expr))
        handler(self, expr)

    def _exec_list(self, expr: SglExprList) -> None:
        for child in expr.expr_list:
            self._execute(child)

    def _exec_constant(self, expr: SglConstantText) -> None:
        self._fill(expr.value)

    def _fill(self, value: Any, role_marker: bool = False) -> None:
        value = str(value)
        spec = getattr(self.backend, "spec_fill", None)
        if self._chat_spec_active() and not role_marker and spec is not None:
            spec(value)  # chat-model speculation defers text inside the assistant turn
            return
        if self.speculated_text.startswith(value):
            self.speculated_text = self.speculated_text[len(value):]
        else:
            self.speculated_text = ""
        self.text_ += value

    def _chat_spec_active(self) -> bool:
        return (self.cur_role == "assistant" and self.num_api_spec_tokens is not None
                and self.backend.is_chat_model)

    def _exec_gen(self, expr: SglGen) -> None:
        from sgl.speculative import speculative_gen

        params = self.default_sampling_para.resolve(expr.sampling_params, self.chat_template.stop_str)
        if self.stream:
            self._stream_gen(expr, params)
            return
        if self.num_api_spec_tokens is not None:
            if self.backend.is_chat_model:
                self.backend.generate(self, params, spec_var_name=expr.name)
                return
            text, meta = speculative_gen(self, params)
        else:
            text, meta = self.backend.generate(self, params)
        self.text_ += text
        self._set_result(expr.name, text, self._with_tool_calls(expr, text, meta))

    @staticmethod
    def _with_tool_calls(expr: SglGen, text: str, meta: Any) -> Any:
        """A gen with tools: its calls, parsed from its text, go into its meta info."""
        if expr.tool_use is None:
            return meta
        from sgl.tools import read_calls

        return {**(meta or {}), "tool_calls": read_calls(expr.tool_use, text)}

    def _stream_gen(self, expr: SglGen, params: SglSamplingParams) -> None:
        if self.num_api_spec_tokens is not None:
            raise ValueError("stream=True cannot be combined with num_api_spec_tokens")
        name = expr.name
        self.variables[name] = ""
        self.stream_var_event[name].set()
        for chunk, meta in self.backend.generate_stream(self, params):
            self.text_ += chunk
            self.variables[name] += chunk
            self.meta_info[name] = meta
            self.stream_var_event[name].set()
            self.stream_text_event.set()
        self.meta_info[name] = self._with_tool_calls(expr, self.variables[name], self.meta_info.get(name))
        self.variable_event[name].set()
        self.stream_var_event[name].set()

    def _set_result(self, name: Any, value: Any, meta: Any) -> None:
        self.variables[name] = value
        self.meta_info[name] = meta
        self.variable_event[name].set()
        if self.stream_var_event is not None and name in self.stream_var_event:
            self.stream_var_event[name].set()

    def _exec_select(self, expr: SglSelect) -> None:
        decision = self.backend.select(self, expr.choices, expr.temperature, expr.choices_method)
        if decision.decision not in expr.choices:
            raise RuntimeError(f"backend returned {decision.decision!r}, which is not one of {expr.choices}")
        self.text_ += decision.decision
        self._set_result(expr.name, decision.decision, decision.meta_info)

    def _exec_role_begin(self, expr: SglRoleBegin) -> None:
        if self.cur_role is not None:
            raise ValueError(f"Nested roles are not allowed: {expr.role!r} begins inside {self.cur_role!r}")
        default_system = self.chat_template.default_system_prompt
        if not self.messages_ and expr.role != "system" and default_system:
            self._exec_role_begin(SglRoleBegin("system"))
            self._fill(default_system)
            self._exec_role_end(SglRoleEnd("system"))
        prefix, _ = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self.cur_role = expr.role
        self._fill(prefix, role_marker=True)
        self.cur_role_begin_pos = len(self.text_)

    def _exec_role_end(self, expr: SglRoleEnd) -> None:
        if self.cur_role != expr.role:
            raise ValueError(f"Role end {expr.role!r} does not match the open role {self.cur_role!r}")
        if self._chat_spec_active():
            self.backend.role_end_generate(self)
        self.cur_role = None
        content = self.text_[self.cur_role_begin_pos:]
        if self.chat_template.strip_role_content:
            content = content.lstrip()
        _, suffix = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self._fill(suffix, role_marker=True)
        self.messages_.append(self._message(expr.role, content))

    def _message(self, role: str, content: str) -> Dict[str, Any]:
        if not self.cur_images:
            return {"role": role, "content": content}
        parts: List[Dict[str, Any]] = [{"type": "text", "text": content}]
        for _, data in self.cur_images:
            parts.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}})
        self.cur_images = []
        return {"role": role, "content": parts}

    def _exec_image(self, expr: SglImage) -> None:
        data = encode_image_base64(expr.path)
        self._add_image(expr.path, data)

    def _exec_video(self, expr: SglVideo) -> None:
        data = encode_video_base64(expr.path, expr.num_frames)
        self._add_image(expr.path, data)

    def _add_image(self, source: Any, data: str) -> None:
        self.images_.append((source, data))
        self.cur_images.append((source, data))
        self.text_ += self.chat_template.image_token

    def _exec_variable(self, expr: SglVariable) -> None:
        source = expr.source_stream_executor or self
        self._fill(source.get_var(expr.name))

    def _exec_var_scope_begin(self, expr: SglVarScopeBegin) -> None:
        self.variables[expr.name] = len(self.text_)

    def _exec_var_scope_end(self, expr: SglVarScopeEnd) -> None:
        start = self.variables[expr.name]
        self._set_result(expr.name, self.text_[start:], None)

    def _exec_commit_lazy(self, expr: SglCommitLazy) -> None:
        if self.text_:  # checked here, not at submit time: earlier appends may still be queued
            self.backend.commit_lazy_operations(self)

    def _exec_concat_append(self, expr: SglConcateAndAppend) -> None:
        if global_config.enable_parallel_encoding and self.backend.support_concate_and_append:
            self._concat_kv(expr)
            return
        new_text = ""
        for state in expr.states:
            child = state.stream_executor
            child.sync()
            new_text += child.text_[child.fork_start_text_pos:]
        self._fill(new_text)

    def _concat_kv(self, expr: SglConcateAndAppend) -> None:
        children = [state.stream_executor for state in expr.states]
        for child in children:
            child.submit(SglCommitLazy())
        for child in children:
            child.sync()
            self.text_ += child.text_[child.fork_start_text_pos:]
        self.backend.concatenate_and_append([c.sid for c in children], self.sid)


# Node type -> handler. Subclasses of a node type use their nearest registered ancestor.
_DISPATCH: Dict[type, Callable[[StreamExecutor, Any], None]] = {
    SglConstantText: StreamExecutor._exec_constant,
    SglExprList: StreamExecutor._exec_list,
    SglGen: StreamExecutor._exec_gen,
    SglSelect: StreamExecutor._exec_select,
    SglRoleBegin: StreamExecutor._exec_role_begin,
    SglRoleEnd: StreamExecutor._exec_role_end,
    SglImage: StreamExecutor._exec_image,
    SglVideo: StreamExecutor._exec_video,
    SglVariable: StreamExecutor._exec_variable,
    SglVarScopeBegin: StreamExecutor._exec_var_scope_begin,
    SglVarScopeEnd: StreamExecutor._exec_var_scope_end,
    SglCommitLazy: StreamExecutor._exec_commit_lazy,
    SglConcateAndAppend: StreamExecutor._exec_concat_append,
}


def _handler_for(node_type: type) -> Callable[[StreamExecutor, Any], None]:
    for cls in node_type.__mro__:
        handler = _DISPATCH.get(cls)
        if handler is not None:
            return handler
    raise ValueError(f"cannot execute a {node_type.__name__}; append str or sgl expressions")
