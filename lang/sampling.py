"""`SglSamplingParams`: the frontend's sampling parameters, derived from the runtime's one table.

Its fields are the table's parameters that `sgl.gen` takes (`frontend_params()` of
`sgl.runtime.sampling.params`, a torch-free module), plus the logprob options of a `/generate`
request and the gen's `dtype`. Types and ranges are checked by the runtime's own rules.

Layering (SGLang's rule): the keyword arguments of `run()` / `run_batch()` are the defaults
of every `gen` in the program; each `gen` argument that is not None overrides its default;
the chat template's stop strings are then appended.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from sgl.runtime.sampling.params import OPENAI, RUN, SamplingParams, frontend_params, rename_params

# JSON-compatible on purpose (SGLang allows "+5", "007" and raw newlines in strings, which
# break the JSON programs people build from these gens). An int has at most 19 digits, what a
# signed 64-bit integer holds (-9223372036854775808..9223372036854775807): unbounded, a gen_int
# without max_tokens could write a 128-digit number.
REGEX_INT = r"-?(?:0|[1-9][0-9]{0,18})[ \n]*"
REGEX_FLOAT = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d ]*\""  # a quoted word string; `".*"` trips some regex->FSM compilers

_DTYPE_NAMES = {int: "int", "int": "int", float: "float", "float": "float", bool: "bool",
                "bool": "bool", str: "str", "str": "str", "string": "str"}


# The /generate request fields a gen or run() may set besides the sampling params (None: unset).
LOGPROB_FIELDS: Dict[str, Any] = {
    "return_logprob": Optional[bool], "logprob_start_len": Optional[int], "top_logprobs_num": Optional[int],
    "return_text_in_logprobs": Optional[bool],
}
# gen's names for the parameters it calls otherwise (max_tokens), for its error messages.
GEN_ALIASES = {spec.name: spec.alias for spec in frontend_params() if spec.alias}
# The keywords of run() / run_batch() that become the defaults of every gen.
RUN_FIELDS = (*(spec.name for spec in frontend_params() if spec.frontend == RUN), *LOGPROB_FIELDS)


class _SglSamplingMethods:
    """The methods of SglSamplingParams (its fields come from the table, below)."""

    def clone(self) -> "SglSamplingParams":
        return copy.deepcopy(self)

    def resolve(self, overrides: "SglSamplingParams", stop_str: Sequence[str] = ()) -> "SglSamplingParams":
        """These params are the run defaults; return a copy with `overrides` layered on top."""
        merged = self.clone()
        for name in field_names():
            value = getattr(overrides, name, None)
            if value is not None:
                setattr(merged, name, copy.deepcopy(value))
        if stop_str:
            merged.stop = stop_list(merged.stop) + list(stop_str)
        return merged

    def to_srt_kwargs(self) -> Dict[str, Any]:
        """The `sampling_params` dict of a native `/generate` request (SRT names)."""
        out = {spec.name: getattr(self, spec.name) for spec in frontend_params()}
        out.update(stop=stop_list(self.stop), stop_token_ids=list(self.stop_token_ids or []))
        if out.get("structural_tag") is None:
            out.pop("structural_tag", None)  # sgl's extension: sent only when used (SGLang's body otherwise)
        return out

    def to_openai_kwargs(self) -> Dict[str, Any]:
        """OpenAI's own parameters (top_k, min_p, min_tokens are dropped, as SGLang does)."""
        out = {spec.public_name: getattr(self, spec.name) for spec in frontend_params() if spec.openai == OPENAI}
        out["stop"] = stop_list(self.stop) or None
        return out

    def logprob_fields(self) -> Dict[str, Any]:
        """Top-level /generate logprob fields, only those that were set."""
        return {name: getattr(self, name) for name in LOGPROB_FIELDS if getattr(self, name) is not None}


def _fields() -> List[Tuple[str, Any, Any]]:
    table = [(spec.name, Optional[spec.annotation], dataclasses.field(default=spec.default))
             for spec in frontend_params()]
    logprobs = [(name, annotation, dataclasses.field(default=None)) for name, annotation in LOGPROB_FIELDS.items()]
    return table + logprobs + [("dtype", Any, dataclasses.field(default=None))]  # dtype: constrained decoding


SglSamplingParams = dataclasses.make_dataclass("SglSamplingParams", _fields(), bases=(_SglSamplingMethods,))
SglSamplingParams.__module__ = __name__  # for pickle (make_dataclass's module= is Python 3.12+)
SglSamplingParams.__doc__ = "A gen's sampling params (None: inherit the run() default) or the run() defaults."


def from_gen_args(args: Dict[str, Any]) -> SglSamplingParams:
    """SglSamplingParams from `sgl.gen`'s arguments, by gen's names (max_tokens)."""
    table = {spec.name: args[spec.public_name] for spec in frontend_params()}
    return SglSamplingParams(**table, **{name: args[name] for name in LOGPROB_FIELDS}, dtype=args["dtype"])


def stop_list(stop: Union[str, Sequence[str], None]) -> List[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    return list(stop)


def dtype_name(dtype: Any) -> Optional[str]:
    """Canonical name of a gen dtype ("int", "float", "bool", "str") or None."""
    if dtype is None:
        return None
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be one of int, float, bool, str (or their names), got {dtype!r}") from None


def apply_dtype(params: SglSamplingParams) -> SglSamplingParams:
    """Turn `dtype` into the regex (and stops) the server enforces, as SGLang's SRT backend does."""
    name = dtype_name(params.dtype)
    if name is None:
        return params
    params = params.clone()
    regex, extra_stops = _DTYPE_RULES[name]
    if params.regex is not None:
        warnings.warn(f"Both dtype and regex are set; dtype {name} wins over regex {params.regex!r}.")
    params.regex = regex
    params.stop = stop_list(params.stop) + list(extra_stops)
    return params


_DTYPE_RULES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "int": (REGEX_INT, (" ", "\n")),
    "float": (REGEX_FLOAT, (" ", "\n")),
    "bool": (REGEX_BOOL, ()),
    "str": (REGEX_STR, ()),
}


# ---- validation ----------------------------------------------------------------------------

def validate(params: SglSamplingParams, aliases: Optional[Dict[str, str]] = None) -> None:
    """Raise ValueError naming the first bad field; None fields (not set) are skipped.

    Types and ranges are the runtime's (`SamplingParams.verify`); `aliases` maps field names to
    the parameter names the caller used (gen's `max_tokens`).
    """
    try:
        _check_with_runtime_rules(params)
    except ValueError as e:
        raise ValueError(rename_params(str(e), aliases or {})) from None
    dtype_name(params.dtype)
    _check_constraints(params)


def _check_with_runtime_rules(params: SglSamplingParams) -> None:
    given = {spec.name: getattr(params, spec.name) for spec in frontend_params()}
    # An unset max_new_tokens is unbounded here: the run() default it inherits is checked on its own.
    SamplingParams(**{"max_new_tokens": None, **{k: v for k, v in given.items() if v is not None}}).verify()


def _check_constraints(p: SglSamplingParams) -> None:
    # The runtime checks these when it compiles the grammar; a program should fail at gen().
    if p.regex is not None:
        try:
            re.compile(p.regex)
        except (re.error, TypeError) as e:
            raise ValueError(f"regex is not a valid regular expression: {e}") from None
    if p.json_schema is not None:
        try:
            json.loads(p.json_schema)
        except (ValueError, TypeError) as e:
            raise ValueError(f"json_schema is not valid JSON: {e}") from None


def field_names() -> List[str]:
    return [f.name for f in dataclasses.fields(SglSamplingParams)]
