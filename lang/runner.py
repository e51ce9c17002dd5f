"""Running programs: one (`run_program`) or many in a thread pool (`run_program_batch`)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from sgl.executor import StreamExecutor
from sgl.global_config import global_config
from sgl.interpreter import ProgramState
from sgl.sampling import SglSamplingParams

logger = logging.getLogger(__name__)

_GENERATOR_CHUNK = 200  # generator_style submits this many programs at a time


def resolve_backend(backend: Any) -> Any:
    """The backend to run on: the given one or the default; Runtimes and engines are adapted."""
    backend = backend if backend is not None else global_config.default_backend
    if backend is None:
        raise ValueError("backend is not set: pass backend=... or call sgl.set_default_backend(...)")
    from sgl.backend import as_backend

    return as_backend(backend)


def run_program(program: Any, backend: Any, func_args: Sequence[Any], func_kwargs: Dict[str, Any],
                default_sampling_para: SglSamplingParams, stream: bool, sync: bool = False,
                use_thread: bool = True) -> ProgramState:
    backend = resolve_backend(backend)
    func_kwargs = {**func_kwargs, **program.bind_arguments}
    executor = StreamExecutor(backend, func_kwargs, default_sampling_para, stream=stream,
                              num_api_spec_tokens=program.num_api_spec_tokens, use_thread=use_thread)
    state = ProgramState(executor)
    if stream:
        thread = threading.Thread(target=_run_body_streaming, daemon=True,
                                  args=(state, program, func_args, func_kwargs))
        thread.start()
        return state
    _run_body(state, program, func_args, func_kwargs, sync)
    return state


def _run_body(state: ProgramState, program: Any, args: Sequence[Any], kwargs: Dict[str, Any], sync: bool) -> None:
    try:
        state.ret_value = program.func(state, *args, **kwargs)
    finally:
        state.stream_executor.end()
    if sync:
        state.sync()
    if global_config.verbosity >= 2:
        print(state.text())


def _run_body_streaming(state: ProgramState, program: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
    try:
        _run_body(state, program, args, kwargs, sync=False)
    except Exception as e:  # nobody can catch it in this thread: report it through state.error()
        logger.warning("Error in the program body: %r", e)
        exe = state.stream_executor
        if exe.error_ is None:
            exe.error_ = e


def cache_program(program: Any, backend: Any) -> Optional[str]:
    """Send the program's constant prefix to the backend cache when it is long enough to help."""
    from sgl.tracer import extract_prefix_by_tracing

    backend = resolve_backend(backend)
    prefix = extract_prefix_by_tracing(program, backend)
    if prefix and len(prefix) > 64:
        backend.cache_prefix(prefix)
        return prefix
    return None


def resolve_num_threads(num_threads: Union[str, int], batch_size: int) -> int:
    if num_threads == "auto":
        num_threads = max(96, (os.cpu_count() or 1) * 16)
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be 'auto' or an integer >= 1, got {num_threads!r}")
    return max(1, min(num_threads, batch_size))


def run_program_batch(program: Any, backend: Any, batch_arguments: List[Dict[str, Any]],
                      default_sampling_para: SglSamplingParams, num_threads: Union[str, int],
                      progress_bar: bool, generator_style: bool = False) -> Union[List[ProgramState], Iterator[ProgramState]]:
    backend = resolve_backend(backend)
    threads = resolve_num_threads(num_threads, len(batch_arguments))
    if global_config.enable_precache_with_tracing and len(batch_arguments) > 1:
        cache_program(program, backend)
    if generator_style:
        return _run_batch_generator(program, backend, batch_arguments, default_sampling_para, threads, progress_bar)
    return list(_run_batch_generator(program, backend, batch_arguments, default_sampling_para, threads,
                                     progress_bar, chunk=len(batch_arguments)))


def _run_batch_generator(program: Any, backend: Any, batch_arguments: List[Dict[str, Any]],
                         default_sampling_para: SglSamplingParams, threads: int, progress_bar: bool,
                         chunk: int = _GENERATOR_CHUNK) -> Iterator[ProgramState]:
    # Submitting in chunks lets a generator yield early results before the whole batch is queued.
    bar = _progress(len(batch_arguments), progress_bar)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for begin in range(0, len(batch_arguments), max(chunk, 1)):
                futures = [_submit(pool, program, backend, args, default_sampling_para, bar)
                           for args in batch_arguments[begin:begin + max(chunk, 1)]]
                for future in futures:
                    yield future.result()
    finally:
        if bar is not None:
            bar.close()


def _submit(pool: ThreadPoolExecutor, program: Any, backend: Any, arguments: Dict[str, Any],
            default_sampling_para: SglSamplingParams, bar: Any) -> "Future[ProgramState]":
    future = pool.submit(run_program, program, backend, (), arguments, default_sampling_para,
                         False, True)
    if bar is not None:
        future.add_done_callback(lambda _: bar.update())
    return future


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    import tqdm

    return tqdm.tqdm(total=total)
