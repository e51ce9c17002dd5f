"""`SglSamplingParams`: one definition of the frontend's sampling parameters.

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
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

# JSON-compatible on purpose (SGLang allows "+5", "007" and raw newlines in strings, which
# break the JSON programs people build from these gens).
REGEX_INT = r"-?(?:0|[1-9][0-9]*)[ \n]*"
REGEX_FLOAT = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d ]*\""  # a quoted word string; `".*"` trips some regex->FSM compilers

# Fields a gen may override; order matches SGLang's resolution list.
LAYERED_FIELDS = (
    "max_new_tokens", "min_new_tokens", "stop", "stop_token_ids", "temperature", "top_p",
    "top_k", "min_p", "frequency_penalty", "presence_penalty", "ignore_eos", "return_logprob",
    "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs", "dtype", "regex",
    "json_schema",
)

_DTYPE_NAMES = {int: "int", "int": "int", float: "float", "float": "float", bool: "bool",
                "bool": "bool", str: "str", "str": "str", "string": "str"}


@dataclass
class SglSamplingParams:
    max_new_tokens: Optional[int] = 128
    min_new_tokens: Optional[int] = 0
    stop: Union[str, Sequence[str], None] = ()
    stop_token_ids: Optional[Sequence[int]] = ()
    temperature: Optional[float] = 1.0
    top_p: Optional[float] = 1.0
    top_k: Optional[int] = -1  # -1 disables top-k
    min_p: Optional[float] = 0.0
    frequency_penalty: Optional[float] = 0.0
    presence_penalty: Optional[float] = 0.0
    ignore_eos: Optional[bool] = False
    return_logprob: Optional[bool] = None
    logprob_start_len: Optional[int] = None
    top_logprobs_num: Optional[int] = None
    return_text_in_logprobs: Optional[bool] = None
    # Constrained decoding; turned into server fields by the backends.
    dtype: Any = None
    regex: Optional[str] = None
    json_schema: Optional[str] = None

    def clone(self) -> "SglSamplingParams":
        return copy.deepcopy(self)

    def resolve(self, overrides: "SglSamplingParams", stop_str: Sequence[str] = ()) -> "SglSamplingParams":
        """These params are the run defaults; return a copy with `overrides` layered on top."""
        merged = self.clone()
        for name in LAYERED_FIELDS:
            value = getattr(overrides, name, None)
            if value is not None:
                setattr(merged, name, copy.deepcopy(value))
        if stop_str:
            merged.stop = stop_list(merged.stop) + list(stop_str)
        return merged

    def to_srt_kwargs(self) -> Dict[str, Any]:
        """The `sampling_params` dict of a native `/generate` request (SRT names)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "stop": stop_list(self.stop),
            "stop_token_ids": list(self.stop_token_ids or []),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "ignore_eos": self.ignore_eos,
            "regex": self.regex,
            "json_schema": self.json_schema,
        }

    def to_openai_kwargs(self) -> Dict[str, Any]:
        # OpenAI has no top_k / min_p / min_tokens; SGLang drops them the same way.
        return {
            "max_tokens": self.max_new_tokens,
            "stop": stop_list(self.stop) or None,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
        }

    def logprob_fields(self) -> Dict[str, Any]:
        """Top-level /generate logprob fields, only those that were set."""
        names = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


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

    `aliases` maps field names to the parameter names the caller used (gen's `max_tokens`).
    """
    for check in _CHECKS:
        check(params, aliases or {})


def _bad(aliases: Dict[str, str], name: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"{aliases.get(name, name)} must be {rule}, got {value!r}")


def _check_counts(p: SglSamplingParams, aliases: Dict[str, str]) -> None:
    for name in ("max_new_tokens", "min_new_tokens"):
        value = getattr(p, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise _bad(aliases, name, "an integer >= 0", value)
    if p.max_new_tokens is not None and p.min_new_tokens and p.min_new_tokens > p.max_new_tokens:
        raise _bad(aliases, "min_new_tokens", f"<= max_new_tokens ({p.max_new_tokens})", p.min_new_tokens)


def _check_floats(p: SglSamplingParams, aliases: Dict[str, str]) -> None:
    rules = {
        "temperature": (lambda v: v >= 0, ">= 0"),
        "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "min_p": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "frequency_penalty": (lambda v: -2 <= v <= 2, "in [-2, 2]"),
        "presence_penalty": (lambda v: -2 <= v <= 2, "in [-2, 2]"),
    }
    for name, (ok, rule) in rules.items():
        value = getattr(p, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise _bad(aliases, name, rule, value)


def _check_top_k(p: SglSamplingParams, aliases: Dict[str, str]) -> None:
    value = p.top_k
    if value is not None and (not isinstance(value, int) or (value != -1 and value < 1)):
        raise _bad(aliases, "top_k", "-1 (disabled) or an integer >= 1", value)


def _check_stops(p: SglSamplingParams, aliases: Dict[str, str]) -> None:
    stop = p.stop
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise _bad(aliases, "stop", "a string or a list of strings", stop)
    ids = p.stop_token_ids
    if ids is not None and (not isinstance(ids, (list, tuple, set)) or not all(isinstance(i, int) for i in ids)):
        raise _bad(aliases, "stop_token_ids", "a list of integers", ids)


def _check_constraints(p: SglSamplingParams, aliases: Dict[str, str]) -> None:
    dtype_name(p.dtype)
    if p.regex is not None:
        try:
            re.compile(p.regex)
        except (re.error, TypeError) as e:
            raise ValueError(f"{aliases.get('regex', 'regex')} is not a valid regular expression: {e}") from None
    if p.json_schema is not None:
        try:
            json.loads(p.json_schema)
        except (ValueError, TypeError) as e:
            raise ValueError(f"json_schema is not valid JSON: {e}") from None
        if p.regex is not None:
            raise ValueError("json_schema and regex are mutually exclusive")


_CHECKS = (_check_counts, _check_floats, _check_top_k, _check_stops, _check_constraints)


def field_names() -> List[str]:
    return [f.name for f in dataclasses.fields(SglSamplingParams)]
