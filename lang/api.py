"""The public builders of the language: `function`, `gen`, `select`, roles, backend helpers.

Argument names, order and defaults are SGLang's, so `import sgl` can replace
`import sglang as sgl` in existing programs.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Union

from sgl.choices import ChoicesSamplingMethod, token_length_normalized
from sgl.function import SglFunction
from sgl.global_config import global_config
from sgl.ir import (
    SglExpr,
    SglExprList,
    SglGen,
    SglImage,
    SglRoleBegin,
    SglRoleEnd,
    SglSelect,
    SglVideo,
    as_expr,
)
from sgl.sampling import GEN_ALIASES, from_gen_args, validate


def function(func: Optional[Callable] = None, num_api_spec_tokens: Optional[int] = None) -> Any:
    """Decorator: `@sgl.function` or `@sgl.function(num_api_spec_tokens=N)`."""
    if func is not None:
        return SglFunction(func, num_api_spec_tokens=num_api_spec_tokens)

    def decorator(inner: Callable) -> SglFunction:
        return SglFunction(inner, num_api_spec_tokens=num_api_spec_tokens)

    return decorator


# ---- backends --------------------------------------------------------------------------------

def set_default_backend(backend: Any) -> None:
    """Use `backend` for programs run without `backend=`; engines are wrapped automatically."""
    from sgl.backend import as_backend
    from sgl.backend.engine import is_engine_like

    as_backend(backend)  # validates; raises ValueError naming the parameter
    global_config.default_backend = as_backend(backend) if is_engine_like(backend) else backend


def _resolve_admin_backend(backend: Any) -> Any:
    backend = backend if backend is not None else global_config.default_backend
    if backend is None:
        return None
    from sgl.backend import as_backend

    return as_backend(backend)


def flush_cache(backend: Any = None) -> Any:
    """Flush the server's prefix cache; False when no backend is set."""
    backend = _resolve_admin_backend(backend)
    if backend is None:
        return False
    return backend.flush_cache()


def get_server_info(backend: Any = None) -> Any:
    """The server's configuration and scheduler info; None when no backend is set."""
    backend = _resolve_admin_backend(backend)
    if backend is None:
        return None
    return backend.get_server_info()


# ---- generation ------------------------------------------------------------------------------

def gen(
    name: Optional[str] = None,
    max_tokens: Optional[int] = None,
    min_tokens: Optional[int] = None,
    stop: Optional[Union[str, List[str]]] = None,
    stop_token_ids: Optional[List[int]] = None,
    temperature: Optional[float] = None,
    top_p: Optional[float] = None,
    top_k: Optional[int] = None,
    min_p: Optional[float] = None,
    frequency_penalty: Optional[float] = None,
    presence_penalty: Optional[float] = None,
    ignore_eos: Optional[bool] = None,
    return_logprob: Optional[bool] = None,
    logprob_start_len: Optional[int] = None,
    top_logprobs_num: Optional[int] = None,
    return_text_in_logprobs: Optional[bool] = None,
    dtype: Optional[Union[type, str]] = None,
    choices: Optional[List[str]] = None,
    choices_method: Optional[ChoicesSamplingMethod] = None,
    regex: Optional[str] = None,
    json_schema: Optional[Union[str, Dict[str, Any]]] = None,
    structural_tag: Optional[Union[str, Dict[str, Any]]] = None,
    tools: Optional[List[Dict[str, Any]]] = None,
    tool_choice: Optional[Union[str, Dict[str, Any]]] = None,
    tool_parser: Optional[str] = None,
) -> SglExpr:
    """Generate text into variable `name`. Unset (None) arguments inherit the run() defaults.

    The sampling arguments are the table's (sgl.runtime.sampling.params, under their gen names);
    tests/sampling/test_param_table.py checks this signature against it. `tools`, `tool_choice`
    (default "auto") and `tool_parser` offer functions to call (`sgl.tools`); the calls are read
    with `state.tool_calls(name)`.
    """
    _check_name(name)
    if choices is not None:
        return select(name, choices, temperature=temperature or 0.0,
                      choices_method=choices_method or token_length_normalized)
    args = {**locals(), "json_schema": _schema_text(json_schema), "structural_tag": _schema_text(structural_tag)}
    use = None
    if tools is not None:
        from sgl.tools import constrain

        if regex is not None or json_schema is not None or structural_tag is not None:
            raise ValueError("tools cannot be combined with regex, json_schema or structural_tag")
        extra, use = constrain(tools, tool_choice, tool_parser)
        args.update(extra)
    elif tool_choice is not None or tool_parser is not None:
        raise ValueError("tool_choice and tool_parser need tools")
    params = from_gen_args(args)
    validate(params, GEN_ALIASES)
    return SglGen(name, params, use)


def _check_name(name: Any) -> None:
    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a str or None, got {type(name).__name__}")


def _schema_text(schema: Any) -> Optional[str]:
    if schema is None or isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        import json

        return json.dumps(schema)
    raise ValueError(f"json_schema and structural_tag must be a JSON string or a dict, got {type(schema).__name__}")


# gen_int and gen_string take gen's arguments in gen's order (SGLang's), less these.
_TYPED_GEN_DROPS = ("min_tokens", "dtype", "choices", "choices_method", "regex", "json_schema", "structural_tag",
                    "tools", "tool_choice", "tool_parser")


def _typed_gen(dtype: type, name: str, doc: str) -> Callable[..., SglExpr]:
    """`gen(..., dtype=dtype)` under gen's own signature (less _TYPED_GEN_DROPS)."""
    full = inspect.signature(gen)
    signature = full.replace(parameters=[p for p in full.parameters.values() if p.name not in _TYPED_GEN_DROPS])

    def typed_gen(*args: Any, **kwargs: Any) -> SglExpr:
        return gen(**signature.bind(*args, **kwargs).arguments, dtype=dtype)

    typed_gen.__signature__ = signature  # type: ignore[attr-defined]
    typed_gen.__name__ = typed_gen.__qualname__ = name
    typed_gen.__doc__ = doc
    return typed_gen


gen_int = _typed_gen(int, "gen_int",
                     "`gen(..., dtype=int)`: an integer (the server constrains the output with a regex).")
gen_string = _typed_gen(str, "gen_string",
                        "`gen(..., dtype=str)`: a double-quoted string (the quotes are part of the value).")


def select(
    name: Optional[str] = None,
    choices: Optional[List[str]] = None,
    temperature: float = 0.0,
    choices_method: ChoicesSamplingMethod = token_length_normalized,
) -> SglExpr:
    """Append exactly one of `choices`, picked by the model's logprobs."""
    _check_name(name)
    if not isinstance(choices, (list, tuple)) or not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"choices must be a non-empty list of strings, got {choices!r}")
    if not isinstance(choices_method, ChoicesSamplingMethod):
        raise ValueError(f"choices_method must be one of the sgl choice methods, got {choices_method!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    return SglSelect(name, list(choices), temperature, choices_method)


# ---- media -----------------------------------------------------------------------------------

def image(expr: Any) -> SglExpr:
    """An image (path, bytes, data URL or PIL image) for a multimodal model."""
    if expr is None:
        raise ValueError("image needs a path, bytes, a data URL or a PIL image, got None")
    return SglImage(expr)


def video(path: str, num_frames: int) -> SglExpr:
    """`num_frames` frames sampled evenly from a video file (needs opencv-python)."""
    if not isinstance(path, str):
        raise ValueError(f"path must be a str, got {type(path).__name__}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    return SglVideo(path, num_frames)


# ---- roles -----------------------------------------------------------------------------------

def _role(name: str, expr: Any) -> SglExprList:
    if expr is None:
        return SglExprList([SglRoleBegin(name), SglRoleEnd(name)])
    return SglExprList([SglRoleBegin(name), as_expr(expr, f"{name}() content"), SglRoleEnd(name)])


def system(expr: Any = None) -> SglExprList:
    return _role("system", expr)


def user(expr: Any = None) -> SglExprList:
    return _role("user", expr)


def assistant(expr: Any = None) -> SglExprList:
    return _role("assistant", expr)


def system_begin() -> SglRoleBegin:
    return SglRoleBegin("system")


def system_end() -> SglRoleEnd:
    return SglRoleEnd("system")


def user_begin() -> SglRoleBegin:
    return SglRoleBegin("user")


def user_end() -> SglRoleEnd:
    return SglRoleEnd("user")


def assistant_begin() -> SglRoleBegin:
    return SglRoleBegin("assistant")


def assistant_end() -> SglRoleEnd:
    return SglRoleEnd("assistant")
