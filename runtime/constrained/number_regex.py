"""Regexes for JSON numbers inside numeric bounds.

outlines-core 0.2.14 ignores ``minimum`` / ``maximum`` / ``exclusive*`` when it turns a JSON
schema into a regex, so a constrained request could emit ``-5`` for ``{"minimum": 0}``. These
functions build regexes whose language is *exactly* the JSON numbers inside the bounds
(integers: every integer in range, written in canonical JSON form; decimals: every
``-?int(.digits)?`` literal whose exact decimal value is in range, no exponent).

Why exponents are dropped for bounded numbers: a bounded exponent-free regex is still exact for
the values it allows, and exponents would make the language non-regular-friendly (``1e-999``).

The output uses only syntax that outlines-core (Rust ``regex``), Python ``re`` and interegular
all read the same way: literals, ``[a-b]`` classes, ``(?:...)``, ``|``, ``*``, ``{m,n}``.
"""

from decimal import Decimal
from typing import List, Optional

__all__ = ["integer_range_regex", "decimal_range_regex"]

_ANY_DIGITS = "[0-9]*"


def _alt(parts: List[str]) -> str:
    """Alternation of regex fragments (a single fragment is returned as is)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("empty numeric range")
    if len(parts) == 1:
        return parts[0]
    return "(?:" + "|".join(parts) + ")"


def _digit_class(lo: int, hi: int) -> str:
    """One digit in [lo, hi]."""
    if lo == hi:
        return str(lo)
    if lo == 0 and hi == 9:
        return "[0-9]"
    return f"[{lo}-{hi}]"


def _any_digits(n: int) -> str:
    """Exactly n arbitrary digits."""
    if n == 0:
        return ""
    if n == 1:
        return "[0-9]"
    return "[0-9]{%d}" % n


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of equal length n with lo <= s <= hi (lexicographic == numeric)."""
    n = len(lo)
    if n == 0:
        return ""
    if lo == hi:
        return lo
    if lo[1:] == "0" * (n - 1) and hi[1:] == "9" * (n - 1):
        return _digit_class(int(lo[0]), int(hi[0])) + _any_digits(n - 1)
    if lo[0] == hi[0]:
        return lo[0] + _same_length_range(lo[1:], hi[1:])
    a, b = int(lo[0]), int(hi[0])
    parts = [lo[0] + _same_length_range(lo[1:], "9" * (n - 1))]
    if b - a > 1:
        parts.append(_digit_class(a + 1, b - 1) + _any_digits(n - 1))
    parts.append(hi[0] + _same_length_range("0" * (n - 1), hi[1:]))
    return _alt(parts)


def _nonneg_int_range(lo: int, hi: Optional[int]) -> str:
    """Canonical decimal strings (no leading zeros) of integers in [lo, hi]; hi None = no upper."""
    assert lo >= 0 and (hi is None or hi >= lo)
    parts = []
    if lo == 0:
        parts.append("0")
        lo = 1
        if hi == 0:
            return "0"
    lo_len = len(str(lo))
    last_len = len(str(hi)) if hi is not None else lo_len
    for n in range(lo_len, last_len + 1):
        a = max(lo, 10 ** (n - 1))
        b = min(hi, 10**n - 1) if hi is not None else 10**n - 1
        if a <= b:
            parts.append(_same_length_range(str(a), str(b)))
    if hi is None:
        # every number with more digits than lo is above lo
        # capped at 16 digits (see json_schema.MAX_INT_DIGITS) unless the bound itself is longer
        parts.append("[1-9][0-9]{%d,%d}" % (lo_len, max(lo_len, 15)))
    return _alt(parts)


def integer_range_regex(lo: Optional[int], hi: Optional[int]) -> str:
    """Regex for JSON integers n with lo <= n <= hi (None = unbounded on that side).

    Negative numbers are ``-`` followed by the magnitude; ``-0`` is never produced.
    """
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty integer range: minimum {lo} > maximum {hi}")
    parts = []
    if hi is None or hi >= 0:
        parts.append(_nonneg_int_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        mag_lo = -hi if hi is not None and hi < 0 else 1
        mag_hi = -lo if lo is not None else None
        parts.append("-" + _nonneg_int_range(mag_lo, mag_hi))
    return _alt(parts)


# ---------------------------------------------------------------- decimals


def _split(d: Decimal):
    """Nonnegative decimal -> (integer part, fraction digits without trailing zeros)."""
    assert d >= 0
    text = format(d, "f")
    if "." not in text:
        return int(text), ""
    int_part, frac = text.split(".")
    return int(int_part), frac.rstrip("0")


def _leading_zeros(p: str) -> int:
    return len(p) - len(p.lstrip("0"))


def _frac_ge(p: str) -> str:
    """Non-empty digit strings D with 0.D >= 0.p, for p non-empty without trailing zeros."""
    z = _leading_zeros(p)
    if z:
        # D either leaves the zero run early with a nonzero digit, or matches it and continues
        early = ("0{0,%d}" % (z - 1) if z > 1 else "") + "[1-9]" + _ANY_DIGITS
        run = "0{%d}" % z if z > 1 else "0"
        return _alt([early, run + _frac_ge(p[z:])])
    d = int(p[0])
    parts = []
    if d < 9:
        parts.append(_digit_class(d + 1, 9) + _ANY_DIGITS)
    parts.append(p[0] + (_frac_ge(p[1:]) if p[1:] else _ANY_DIGITS))
    return _alt(parts)


def _frac_le(q: str) -> str:
    """Non-empty digit strings D with 0.D <= 0.q (q without trailing zeros, may be empty)."""
    if not q:
        return "0+"
    z = _leading_zeros(q)
    if z:
        # a run of zeros shorter than or equal to q's is below q; a longer prefix must follow q
        return _alt(["0{1,%d}" % z if z > 1 else "0", "0" * z + _frac_le(q[z:])])
    d = int(q[0])
    parts = []
    if d > 0:
        parts.append(_digit_class(0, d - 1) + _ANY_DIGITS)
    rest = _frac_le(q[1:])
    # after an equal digit the remainder may also stop right here (D is a prefix of q)
    parts.append(q[0] + "(?:" + rest + ")?")
    return _alt(parts)


def _frac_between(p: str, q: str) -> str:
    """Non-empty digit strings D with 0.p <= 0.D <= 0.q; p non-empty, 0.p <= 0.q."""
    if not q:
        raise ValueError("empty fraction range")
    if p[0] == q[0]:
        rest_p, rest_q = p[1:], q[1:]
        if not rest_p:
            return p[0] + "(?:" + _frac_le(rest_q) + ")?"
        return p[0] + _frac_between(rest_p, rest_q)
    a, b = int(p[0]), int(q[0])
    parts = [p[0] + (_frac_ge(p[1:]) if p[1:] else _ANY_DIGITS)]
    if b - a > 1:
        parts.append(_digit_class(a + 1, b - 1) + _ANY_DIGITS)
    parts.append(q[0] + "(?:" + _frac_le(q[1:]) + ")?")
    return _alt(parts)


def _with_fraction(int_regex: str, frac: Optional[str], frac_optional: bool) -> str:
    """``int_regex`` followed by ``.frac`` (optional when the bare integer is also in range)."""
    if frac is None:
        return int_regex
    tail = r"\." + frac
    return int_regex + ("(?:" + tail + ")?" if frac_optional else tail)


def _nonneg_decimal_range(lo: Decimal, hi: Optional[Decimal]) -> Optional[str]:
    """Exponent-free JSON literals x with lo <= x <= hi, 0 <= lo; None if the range is empty."""
    if hi is not None and hi < lo:
        return None
    lo_int, lo_frac = _split(lo)
    parts = []
    if hi is None:
        hi_int, hi_frac = None, None
    else:
        hi_int, hi_frac = _split(hi)
    if hi_int is not None and lo_int == hi_int:
        # same integer part: the fraction is bounded on both sides
        if not lo_frac:
            parts.append(_with_fraction(str(lo_int), _frac_le(hi_frac), True))
        else:
            parts.append(_with_fraction(str(lo_int), _frac_between(lo_frac, hi_frac), False))
        return _alt(parts)
    # integer part lo_int: fraction >= lo's fraction
    if lo_frac:
        parts.append(_with_fraction(str(lo_int), _frac_ge(lo_frac), False))
        first_full = lo_int + 1
    else:
        first_full = lo_int
    # integer parts whose whole unit interval [I, I+1) lies inside the range
    last_full = None if hi_int is None else hi_int - 1
    if last_full is None or first_full <= last_full:
        parts.append(_with_fraction(_nonneg_int_range(first_full, last_full), "[0-9]+", True))
    if hi_int is not None:
        parts.append(_with_fraction(str(hi_int), _frac_le(hi_frac), True))
    return _alt(parts)


def decimal_range_regex(lo: Optional[Decimal], hi: Optional[Decimal]) -> str:
    """Regex for exponent-free JSON numbers x with lo <= x <= hi (None = unbounded).

    Exact with respect to the decimal bounds: ``0.1`` is a valid maximum for ``0.1`` but
    ``0.10000000000000000001`` is not. ``-0`` / ``-0.0`` appear only when 0 is in range.
    """
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty number range: minimum {lo} > maximum {hi}")
    parts = []
    if hi is None or hi >= 0:
        parts.append(_nonneg_decimal_range(max(lo, Decimal(0)) if lo is not None else Decimal(0), hi))
    if lo is None or lo < 0:
        mag_lo = -hi if hi is not None and hi < 0 else Decimal(0)
        mag_hi = -lo if lo is not None else None
        neg = _nonneg_decimal_range(mag_lo, mag_hi)
        if neg is not None:
            parts.append("-" + neg)
    return _alt(parts)
