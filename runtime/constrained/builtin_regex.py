"""Regexes for the language's ``dtype=`` and ``choices=`` constraints.

The dtype regexes are the frontend's (``sgl.sampling``, SGLang's ``sglang/lang/ir.py``), one
definition for both sides so programs and servers agree; ``choices`` becomes an alternation of the
escaped choices.
"""

import json
from typing import List, Sequence, Union

from sgl.sampling import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR

from .string_regex import escape_literal

__all__ = ["REGEX_INT", "REGEX_FLOAT", "REGEX_BOOL", "REGEX_STR", "dtype_regex", "choices_regex", "parse_choices"]

_DTYPES = {int: REGEX_INT, float: REGEX_FLOAT, bool: REGEX_BOOL, str: REGEX_STR,
           "int": REGEX_INT, "float": REGEX_FLOAT, "bool": REGEX_BOOL, "str": REGEX_STR}


def dtype_regex(dtype: Union[type, str]) -> str:
    """Regex for ``sgl.gen(dtype=...)``: int, float, bool or str (the type or its name)."""
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"unsupported dtype {dtype!r}: expected int, float, bool or str") from None


def parse_choices(text: Union[str, Sequence[str]]) -> List[str]:
    """Choices as a list of strings, from a list or its JSON text (the grammar cache key)."""
    if isinstance(text, str):
        try:
            choices = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"choices must be a JSON list of strings: {e}") from None
    else:
        choices = list(text)
    if not isinstance(choices, list) or not choices:
        raise ValueError("choices must be a non-empty list of strings")
    for c in choices:
        if not isinstance(c, str) or not c:
            raise ValueError(f"choices must be non-empty strings, got {c!r}")
    return choices


def choices_regex(choices: Union[str, Sequence[str]]) -> str:
    """Exactly one of the choices (a JSON list text or a sequence of strings)."""
    return "(?:" + "|".join(escape_literal(c) for c in parse_choices(choices)) + ")"
