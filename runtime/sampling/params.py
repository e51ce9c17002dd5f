"""SamplingParams: the one definition of every per-request sampling parameter.

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
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

# Below this temperature a request is greedy (SGLang's _SAMPLING_EPS).
SAMPLING_EPS = 1e-6
# top_k = -1 means "whole vocabulary"; any number above every vocab size works.
TOP_K_ALL = 1 << 30

_INT_FIELDS = ("min_new_tokens", "top_k", "n")
_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
)
_BOOL_FIELDS = ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim")
_GRAMMAR_FIELDS = ("json_schema", "regex", "ebnf")


@dataclass
class SamplingParams:
    max_new_tokens: Optional[int] = 128
    min_new_tokens: int = 0
    stop: Optional[Union[str, list[str]]] = None
    stop_token_ids: Optional[Union[list[int], set[int]]] = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    n: int = 1
    json_schema: Optional[str] = None
    regex: Optional[str] = None
    ebnf: Optional[str] = None
    custom_params: Optional[dict[str, Any]] = None
    seed: Optional[int] = None  # per-request sampling seed (SGLang later calls it sampling_seed)
    # Derived by normalize(): the longest stop string measured in tokens.
    stop_str_max_len: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        self._coerce_types()

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "SamplingParams":
        """Build from a request's `sampling_params` dict; unknown keys are rejected by name."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"sampling_params must be a dict, got {type(d).__name__}.")
        known = cls.field_names()
        for key in d:
            if key not in known:
                raise ValueError(f"Unknown sampling parameter: {key!r}.")
        return cls(**d)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys a request may send (the constructor's fields)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that `from_dict` turns back into equal params."""
        out = {name: getattr(self, name) for name in self.field_names()}
        if isinstance(out["stop_token_ids"], set):
            out["stop_token_ids"] = sorted(out["stop_token_ids"])
        if isinstance(out["stop"], list):
            out["stop"] = list(out["stop"])
        return out

    # ----------------------------------------------------------------- type checks

    def _coerce_types(self) -> None:
        # JSON gives ints for floats and sometimes 16.0 for ints; accept both, reject the rest.
        if self.max_new_tokens is not None:
            self.max_new_tokens = _as_int("max_new_tokens", self.max_new_tokens)
        for name in _INT_FIELDS:
            setattr(self, name, _as_int(name, getattr(self, name)))
        for name in _FLOAT_FIELDS:
            setattr(self, name, _as_float(name, getattr(self, name)))
        for name in _BOOL_FIELDS:
            _check_bool(name, getattr(self, name))
        self.stop = _as_stop(self.stop)
        self.stop_token_ids = _as_token_ids("stop_token_ids", self.stop_token_ids)
        self.json_schema = _as_schema(self.json_schema)
        for name in ("regex", "ebnf"):
            _check_optional_str(name, getattr(self, name))
        if self.custom_params is not None and not isinstance(self.custom_params, dict):
            raise ValueError(
                f"custom_params must be a dict or None, got {type(self.custom_params).__name__}."
            )
        if self.seed is not None:
            self.seed = _as_int("seed", self.seed)

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
        _check(self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}.")
        _check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}.")
        _check(0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}.")
        _check(
            self.top_k == -1 or self.top_k >= 1,
            f"top_k must be -1 (disable), or at least 1, got {self.top_k}.",
        )
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            _check(-2.0 <= value <= 2.0, f"{name} must be in [-2, 2], got {value}.")
        _check(
            0.0 <= self.repetition_penalty <= 2.0,
            f"repetition_penalty must be in [0, 2], got {self.repetition_penalty}.",
        )
        self._verify_lengths()
        grammars = [getattr(self, name) for name in _GRAMMAR_FIELDS]
        _check(
            sum(g is not None for g in grammars) <= 1, "Only one of regex, json_schema, or ebnf can be set."
        )
        _check(self.n >= 1, f"n must be at least 1, got {self.n}.")
        self._verify_stop_token_ids(vocab_size)

    def _verify_lengths(self) -> None:
        _check(
            self.min_new_tokens >= 0,
            f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}.",
        )
        if self.max_new_tokens is None:
            return
        _check(self.max_new_tokens >= 0, f"max_new_tokens must be at least 0, got {self.max_new_tokens}.")
        _check(
            self.min_new_tokens <= self.max_new_tokens,
            f"min_new_tokens must be in [0, max_new_tokens({self.max_new_tokens})], got {self.min_new_tokens}.",
        )

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


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}.")


def _check_optional_str(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {type(value).__name__}.")


def _as_stop(value: Any) -> Optional[Union[str, list[str]]]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return list(value)
    raise ValueError(f"stop must be a string or a list of strings, got {value!r}.")


def _as_token_ids(name: str, value: Any) -> Optional[Union[list[int], set[int]]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of integers, got {value!r}.")
    ids = [_as_int(name, v) for v in value]
    return set(ids) if isinstance(value, (set, frozenset)) else ids


def _as_schema(value: Any) -> Optional[str]:
    # Python callers often hand over the schema itself; the grammar cache keys on the string.
    if isinstance(value, dict):
        return json.dumps(value)
    _check_optional_str("json_schema", value)
    return value


def _stop_len(stop: str, tokenizer: Any) -> int:
    if tokenizer is None:
        return len(stop)
    return len(tokenizer.encode(stop, add_special_tokens=False))
