"""`SglFunction`: what `@sgl.function` returns; `run` / `run_batch` execute the program."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from sgl.interpreter import ProgramState
from sgl.sampling import LOGPROB_FIELDS, RUN_FIELDS, SglSamplingParams, stop_list, validate
from sgl.runtime.sampling.params import frontend_params


class SglFunction:
    def __init__(self, func: Callable, num_api_spec_tokens: Optional[int] = None,
                 bind_arguments: Optional[Dict[str, Any]] = None) -> None:
        if not callable(func):
            raise ValueError(f"func must be callable, got {type(func).__name__}")
        if num_api_spec_tokens is not None and (not isinstance(num_api_spec_tokens, int) or num_api_spec_tokens < 1):
            raise ValueError(f"num_api_spec_tokens must be a positive integer, got {num_api_spec_tokens!r}")
        self.func = func
        self.num_api_spec_tokens = num_api_spec_tokens
        self.bind_arguments = dict(bind_arguments or {})
        spec = inspect.getfullargspec(func)
        if not spec.args or spec.args[0] != "s":
            raise ValueError(f'the first argument of an sgl function must be named "s" ({func.__name__})')
        self.arg_names: List[str] = spec.args[1:]
        self.arg_defaults: Sequence[Any] = spec.defaults or ()
        self.__name__ = getattr(func, "__name__", "sgl_function")
        self.__doc__ = getattr(func, "__doc__", None)

    def bind(self, **kwargs: Any) -> "SglFunction":
        unknown = [key for key in kwargs if key not in self.arg_names]
        if unknown:
            raise ValueError(f"bind got arguments {unknown} that {self.__name__} does not take ({self.arg_names})")
        return SglFunction(self.func, self.num_api_spec_tokens, {**self.bind_arguments, **kwargs})

    def run(self, *args: Any, stream: bool = False, backend: Any = None, use_thread: bool = True,
            **kwargs: Any) -> ProgramState:
        """Run the program once; returns its state at once (values resolve when read).

        Keywords named like the run-level sampling parameters (`RUN_SAMPLING_ARGS`: max_new_tokens,
        temperature, stop, ..., the logprob options) set the defaults of every gen; the other
        keywords are the program's arguments."""
        from sgl.runner import run_program

        sampling = {name: kwargs.pop(name) for name in RUN_SAMPLING_ARGS if name in kwargs}
        defaults = default_sampling_params({**RUN_DEFAULTS, **sampling})
        return run_program(self, backend, args, kwargs, defaults, stream, use_thread=use_thread)

    def run_batch(
        self,
        batch_kwargs: Sequence[Union[Dict[str, Any], Sequence[Any]]],
        *,
        backend: Any = None,
        num_threads: Union[str, int] = "auto",
        progress_bar: bool = False,
        generator_style: bool = False,
        **sampling: Any,
    ) -> Union[List[ProgramState], Iterator[ProgramState]]:
        """Run the program once per argument set; results keep the input order. Keywords are the
        run-level sampling parameters, as in `run`."""
        from sgl.runner import run_program_batch

        unknown = sorted(set(sampling) - set(RUN_SAMPLING_ARGS))
        if unknown:
            raise ValueError(f"run_batch got unknown keyword arguments {unknown}; it takes {list(RUN_SAMPLING_ARGS)}")
        if not isinstance(batch_kwargs, (list, tuple)):
            raise ValueError(f"batch_kwargs must be a list of dicts or of argument tuples, got {type(batch_kwargs).__name__}")
        if len(batch_kwargs) == 0:
            return iter([]) if generator_style else []
        defaults = default_sampling_params({**RUN_DEFAULTS, **sampling})
        arguments = self._batch_arguments(batch_kwargs)
        return run_program_batch(self, backend, arguments, defaults, num_threads, progress_bar, generator_style)

    def _batch_arguments(self, batch: Sequence[Any]) -> List[Dict[str, Any]]:
        if all(isinstance(item, dict) for item in batch):
            return [dict(item) for item in batch]
        required = len(self.arg_names) - len(self.arg_defaults)
        result = []
        for item in batch:
            if not isinstance(item, (list, tuple)) or not required <= len(item) <= len(self.arg_names):
                raise ValueError("Given arguments mismatch the SGL function signature: "
                                 f"{item!r} for arguments {self.arg_names}")
            result.append(dict(zip(self.arg_names, item)))
        return result

    def trace(self, *, backend: Any = None, **kwargs: Any) -> Any:
        from sgl.global_config import global_config
        from sgl.tracer import trace_program

        backend = backend if backend is not None else global_config.default_backend
        if backend is not None:
            from sgl.backend import as_backend

            backend = as_backend(backend)
        return trace_program(self, kwargs, backend)

    def cache(self, backend: Any = None) -> Optional[str]:
        """Cache the program's constant prefix on the backend; returns the prefix if sent."""
        from sgl.runner import cache_program

        return cache_program(self, backend)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from sgl.tracer import TracingScope

        scope = TracingScope.get_current_scope()
        if scope is None:
            return self.run(*args, **kwargs)
        kwargs["backend"] = scope.tracer_state.backend
        return self.trace(**kwargs)

    def __repr__(self) -> str:
        return f"SglFunction({self.__name__})"


# run()/run_batch() keyword arguments that become the defaults of every gen, and their defaults
# (from the one table; the two methods' shown signatures are built from these below, and
# tests/sampling/test_param_table.py checks them against the table).
RUN_SAMPLING_ARGS = RUN_FIELDS
RUN_DEFAULTS: Dict[str, Any] = {
    **{spec.name: spec.default for spec in frontend_params() if spec.name in RUN_FIELDS},
    **dict.fromkeys(LOGPROB_FIELDS),
}


def _show_run_sampling(method: Callable) -> None:
    """Give `method` the signature users see: its own parameters plus the run-level sampling
    keywords with their defaults (in place of the `**sampling` that collects them)."""
    sig = inspect.signature(method)
    params = list(sig.parameters.values())
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    shown_kw = var_kw if method.__name__ == "run" else []  # run's **kwargs are the program's arguments
    sampling = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=RUN_DEFAULTS[name])
                for name in RUN_SAMPLING_ARGS]
    own = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    method.__signature__ = sig.replace(parameters=own + sampling + shown_kw)


_show_run_sampling(SglFunction.run)
_show_run_sampling(SglFunction.run_batch)


def default_sampling_params(run_kwargs: Dict[str, Any]) -> SglSamplingParams:
    """The run()-level defaults every gen of the program inherits (validated)."""
    fields = dict(run_kwargs)
    fields["stop"] = stop_list(fields.get("stop"))
    fields["stop_token_ids"] = list(fields.get("stop_token_ids") or [])
    params = SglSamplingParams(min_new_tokens=0, **fields)
    validate(params)
    return params
