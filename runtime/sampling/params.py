"""SamplingParams: the one table of per-request sampling parameters.

Each field of the `SamplingParams` dataclass is one row of the table: its name (SGLang's key in
`/generate`'s `sampling_params`), type, default, allowed range and where else it appears: under
which name on the OpenAI routes and in `sgl.gen`, and whether `run()` takes it as a default.
`PARAMS` is that table; the other surfaces are derived from it (the `/generate` and OpenAI request
models, the OpenAI-to-runtime mapping, the frontend's `SglSamplingParams` and its validation) or,
where Python needs a written signature (`sgl.gen`, `run()`), checked against it by
tests/sampling/test_param_table.py. This module imports only the standard library, so the
frontend (`import sgl`) may use it without pulling in torch.

Names, defaults, ranges and error messages follow SGLang's `srt/sampling/sampling_params.py`
(reference §2.5). Lifecycle, as in SGLang's TokenizerManager:

    params = SamplingParams.from_dict(request["sampling_params"])   # type checks, unknown keys
    params.normalize(tokenizer)                                     # stop list, greedy rewrite
    params.verify(vocab_size)                                       # value ranges

Every error is a ValueError whose message starts with (or names) the offending parameter, so the
HTTP layer can turn it into a 400 `{"error": {"message", "param"}}`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Union

# Below this temperature a request is greedy (SGLang's _SAMPLING_EPS).
SAMPLING_EPS = 1e-6
# top_k = -1 means "whole vocabulary"; any number above every vocab size works.
TOP_K_ALL = 1 << 30

# Where a parameter appears on the OpenAI routes.
OPENAI = "openai"  # one of OpenAI's own request fields
EXTRA = "extra"  # an SGLang extension (the official client sends it in `extra_body`)
# Where it appears in the frontend language.
GEN = "gen"  # an argument of `sgl.gen` (under its alias)
RUN = "run"  # also a keyword of `run()` / `run_batch()` (under its runtime name), the default of every gen

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MASK63 = (1 << 63) - 1


@dataclass(frozen=True)
class Range:
    ok: Callable[[Any], bool]
    rule: str  # the words after "<name> must be" in the error message (SGLang's)


def _between(lo: float, hi: float, lo_open: bool = False) -> Range:
    low_ok = (lambda v: v > lo) if lo_open else (lambda v: v >= lo)
    return Range(lambda v: low_ok(v) and v <= hi, f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]")


def _at_least(lo: int) -> Range:
    return Range(lambda v: v >= lo, f"at least {lo}")


def _param(default: Any, kind: str, valid: Optional[Range] = None, *, alias: Optional[str] = None,
           openai: Optional[str] = None, frontend: Optional[str] = None, nullable: bool = False) -> Any:
    """One row of the table, as a dataclass field (see `ParamSpec` for the columns)."""
    meta = {"kind": kind, "valid": valid, "alias": alias, "openai": openai, "frontend": frontend,
            "nullable": nullable or default is None}
    return field(default=default, metadata=meta)


@dataclass
class SamplingParams:
    max_new_tokens: Optional[int] = _param(128, "int", _at_least(0), alias="max_tokens", openai=OPENAI,
                                           frontend=RUN, nullable=True)  # None: up to the length limit
    min_new_tokens: int = _param(0, "int", Range(lambda v: v >= 0, "in [0, max_new_tokens]"),
                                 alias="min_tokens", openai=EXTRA, frontend=GEN)
    stop: Optional[Union[str, list[str]]] = _param(None, "stop", openai=OPENAI, frontend=RUN)
    stop_token_ids: Optional[Union[list[int], set[int]]] = _param(None, "token_ids", openai=EXTRA, frontend=RUN)
    temperature: float = _param(1.0, "float", Range(lambda v: v >= 0, "non-negative"), openai=OPENAI,
                                frontend=RUN)
    top_p: float = _param(1.0, "float", _between(0, 1, lo_open=True), openai=OPENAI, frontend=RUN)
    top_k: int = _param(-1, "int", Range(lambda v: v == -1 or v >= 1, "-1 (disable), or at least 1"),
                        openai=EXTRA, frontend=RUN)
    min_p: float = _param(0.0, "float", _between(0, 1), openai=EXTRA, frontend=RUN)
    frequency_penalty: float = _param(0.0, "float", _between(-2, 2), openai=OPENAI, frontend=RUN)
    presence_penalty: float = _param(0.0, "float", _between(-2, 2), openai=OPENAI, frontend=RUN)
    repetition_penalty: float = _param(1.0, "float", _between(0, 2), openai=EXTRA)
    ignore_eos: bool = _param(False, "bool", openai=EXTRA, frontend=RUN)
    skip_special_tokens: bool = _param(True, "bool", openai=EXTRA)
    spaces_between_special_tokens: bool = _param(True, "bool")
    no_stop_trim: bool = _param(False, "bool", openai=EXTRA)
    n: int = _param(1, "int", _at_least(1), openai=OPENAI)
    json_schema: Optional[str] = _param(None, "schema", openai=EXTRA, frontend=GEN)  # chat: response_format
    regex: Optional[str] = _param(None, "str", openai=EXTRA, frontend=GEN)
    ebnf: Optional[str] = _param(None, "str", openai=EXTRA)
    # free text with constrained spans from a trigger on (chat: response_format structural_tag)
    structural_tag: Optional[str] = _param(None, "schema", openai=EXTRA, frontend=GEN)
    custom_params: Optional[dict[str, Any]] = _param(None, "dict")
    seed: Optional[int] = _param(None, "int", openai=OPENAI)  # SGLang later calls it sampling_seed
    # Derived by normalize(): the longest stop string measured in tokens.
    stop_str_max_len: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        for spec in PARAMS.values():
            setattr(self, spec.name, spec.convert(getattr(self, spec.name)))

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "SamplingParams":
        """Build from a request's `sampling_params` dict; unknown keys are rejected by name."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"sampling_params must be a dict, got {type(d).__name__}.")
        for key in d:
            if key not in PARAMS:
                raise ValueError(f"Unknown sampling parameter: {key!r}.")
        return cls(**d)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys a request may send (the constructor's fields)."""
        return tuple(PARAMS)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that `from_dict` turns back into equal params."""
        out = {name: getattr(self, name) for name in PARAMS}
        if isinstance(out["stop_token_ids"], set):
            out["stop_token_ids"] = sorted(out["stop_token_ids"])
        if isinstance(out["stop"], list):
            out["stop"] = list(out["stop"])
        return out

    # ----------------------------------------------------------------- normalize / verify

    def normalize(self, tokenizer: Any = None) -> None:
        """Canonical forms the runtime relies on (idempotent).

        `stop` becomes a list; `stop_str_max_len` is the longest stop string in tokens (in
        characters without a tokenizer); temperature < 1e-6 becomes greedy (temperature 1,
        top_k 1); top_k -1 becomes "all"; `stop_token_ids` becomes a set.
        """
        self.stop = self.stop_strs
        self.stop_str_max_len = max((_stop_len(s, tokenizer) for s in self.stop), default=0)
        if 0 <= self.temperature < SAMPLING_EPS:
            self.temperature, self.top_k = 1.0, 1
        if self.top_k == -1:
            self.top_k = TOP_K_ALL
        self.stop_token_ids = set(self.stop_token_ids or ())

    def verify(self, vocab_size: Optional[int] = None) -> None:
        """Raise ValueError (SGLang's messages) when a value is out of range."""
        for spec in PARAMS.values():
            spec.check_range(getattr(self, spec.name))
        if self.max_new_tokens is not None:
            _check(
                self.min_new_tokens <= self.max_new_tokens,
                f"min_new_tokens must be in [0, max_new_tokens({self.max_new_tokens})], got {self.min_new_tokens}.",
            )
        grammars = [getattr(self, name) for name in GRAMMAR_FIELDS if name != "structural_tag"]
        _check(
            sum(g is not None for g in grammars) <= 1, "Only one of regex, json_schema, or ebnf can be set."
        )
        if self.structural_tag is not None:
            _check(all(g is None for g in grammars),
                   "structural_tag cannot be combined with regex, json_schema, or ebnf.")
            from sgl.runtime.constrained.structural_tag import parse_structural_tag

            parse_structural_tag(self.structural_tag)
        self._verify_stop_token_ids(vocab_size)

    def _verify_stop_token_ids(self, vocab_size: Optional[int]) -> None:
        for tid in self.stop_token_ids or ():
            _check(tid >= 0, f"stop_token_ids must be non-negative token ids, got {tid}.")
            if vocab_size is not None:
                _check(tid < vocab_size, f"stop_token_ids must be < vocab size {vocab_size}, got {tid}.")

    # ----------------------------------------------------------------- derived views

    @property
    def stop_strs(self) -> list[str]:
        """Stop strings as a list (SGLang's attribute name)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def is_greedy(self) -> bool:
        """Greedy before or after normalize()."""
        return self.top_k == 1 or 0 <= self.temperature < SAMPLING_EPS

    def effective_temperature(self) -> float:
        """The divisor the sampler uses (greedy requests divide by 1)."""
        return 1.0 if self.is_greedy else self.temperature

    def effective_top_k(self) -> int:
        """top_k with greedy as 1 and "disabled" as TOP_K_ALL."""
        if self.is_greedy:
            return 1
        return TOP_K_ALL if self.top_k == -1 else self.top_k


# --------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ParamSpec:
    """One sampling parameter: a row of the table."""

    name: str  # the runtime's name (a key of /generate's sampling_params)
    annotation: Any  # its Python type
    default: Any
    kind: str  # how a value is type-checked: a key of _CONVERTERS
    valid: Optional[Range]  # the allowed values; None: any value of the type
    alias: Optional[str]  # its name in sgl.gen and on the OpenAI routes, where that differs
    openai: Optional[str]  # OPENAI, EXTRA, or None: not on the OpenAI routes
    frontend: Optional[str]  # RUN, GEN, or None: not in the frontend language
    nullable: bool  # None is a valid value

    @property
    def public_name(self) -> str:
        """The name in sgl.gen and on the OpenAI routes."""
        return self.alias or self.name

    def convert(self, value: Any) -> Any:
        """`value` type-checked (JSON's 16.0 for an int, 1 for a float are accepted)."""
        if value is None and self.nullable:
            return None
        return _CONVERTERS[self.kind](self.name, value)

    def check_range(self, value: Any) -> None:
        """Raise ValueError (`<name> must be <rule>, got <value>.`) when `value` is out of range."""
        if self.valid is not None and value is not None:
            _check(self.valid.ok(value), f"{self.name} must be {self.valid.rule}, got {value}.")


def _table() -> Dict[str, ParamSpec]:
    hints = typing.get_type_hints(SamplingParams)
    return {f.name: ParamSpec(name=f.name, annotation=hints[f.name], default=f.default, **f.metadata)
            for f in dataclasses.fields(SamplingParams) if f.init}


PARAMS: Dict[str, ParamSpec] = _table()
GRAMMAR_FIELDS = ("json_schema", "regex", "ebnf", "structural_tag")


def openai_params() -> list[ParamSpec]:
    """The parameters the OpenAI routes take (OpenAI's own and SGLang's extensions)."""
    return [spec for spec in PARAMS.values() if spec.openai is not None]


def frontend_params() -> list[ParamSpec]:
    """The parameters `sgl.gen` takes (those marked RUN are also `run()` keywords)."""
    return [spec for spec in PARAMS.values() if spec.frontend is not None]


def rename_params(message: str, names: Dict[str, str]) -> str:
    """An error `message` with each runtime parameter name in `names` replaced by the caller's
    name for it (`max_new_tokens` -> `max_tokens` for sgl.gen and the OpenAI routes)."""
    for name, public in names.items():
        message = re.sub(rf"\b{name}\b", public, message)
    return message


def choice_seed(seed: int, index: int) -> int:
    """The seed of choice `index` of an n-choice request seeded with `seed`.

    Choice 0 keeps the request's seed (so n=1 and the first of n choices agree); the others get
    distinct seeds derived from it, so a seeded request is reproducible and its choices differ.
    """
    if index == 0:
        return seed
    return (seed + index * _GOLDEN_GAMMA) & _MASK63


# --------------------------------------------------------------------- helpers


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got a bool.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} must be an integer, got {value!r}.")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN.")
    return float(value)


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}.")
    return value


def _as_optional_str(name: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {type(value).__name__}.")
    return value


def _as_optional_dict(name: str, value: Any) -> Optional[dict]:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict or None, got {type(value).__name__}.")
    return value


def _as_stop(name: str, value: Any) -> Optional[Union[str, list[str]]]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return list(value)
    raise ValueError(f"{name} must be a string or a list of strings, got {value!r}.")


def _as_token_ids(name: str, value: Any) -> Optional[Union[list[int], set[int]]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of integers, got {value!r}.")
    ids = [_as_int(name, v) for v in value]
    return set(ids) if isinstance(value, (set, frozenset)) else ids


def _as_schema(name: str, value: Any) -> Optional[str]:
    # Python callers often hand over the schema itself; the grammar cache keys on the string.
    if isinstance(value, dict):
        return json.dumps(value)
    return _as_optional_str(name, value)


_CONVERTERS: Dict[str, Callable[[str, Any], Any]] = {
    "int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_optional_str, "dict": _as_optional_dict,
    "stop": _as_stop, "token_ids": _as_token_ids, "schema": _as_schema,
}


def _stop_len(stop: str, tokenizer: Any) -> int:
    if tokenizer is None:
        return len(stop)
    return len(tokenizer.encode(stop, add_special_tokens=False))
