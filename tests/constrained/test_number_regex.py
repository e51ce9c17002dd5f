"""Integer and decimal range regexes, checked exhaustively against the bounds."""

import random
import re
from decimal import Decimal

import pytest

from sgl.runtime.constrained.number_regex import decimal_range_regex, integer_range_regex

JSON_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
JSON_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")

INT_BOUNDS = [None, -1000, -101, -100, -99, -10, -9, -1, 0, 1, 7, 9, 10, 11, 99, 100, 101, 199, 999, 1000]


def _in(n, lo, hi) -> bool:
    return (lo is None or n >= lo) and (hi is None or n <= hi)


@pytest.mark.parametrize("lo", INT_BOUNDS)
def test_integer_ranges_exhaustive(lo):
    for hi in INT_BOUNDS:
        if lo is not None and hi is not None and lo > hi:
            continue
        rx = re.compile(integer_range_regex(lo, hi))
        for n in range(-1300, 1300):
            assert bool(rx.fullmatch(str(n))) == _in(n, lo, hi), (lo, hi, n)
        # never a non-canonical form
        for text in ["-0", "00", "01", "-01", "007", "", "-", "+1", "1.0"]:
            assert not rx.fullmatch(text), (lo, hi, text)


def test_integer_ranges_random_large():
    rng = random.Random(1)
    for _ in range(300):
        a, b = sorted(rng.randint(-10**9, 10**9) for _ in range(2))
        rx = re.compile(integer_range_regex(a, b))
        for n in [a, b, a - 1, b + 1, (a + b) // 2] + [rng.randint(a - 100, b + 100) for _ in range(30)]:
            assert bool(rx.fullmatch(str(n))) == (a <= n <= b), (a, b, n)


def test_integer_empty_range_is_an_error():
    with pytest.raises(ValueError, match="empty integer range"):
        integer_range_regex(5, 4)


DEC_BOUNDS = [None] + [Decimal(x) for x in [
    "0", "1", "-1", "2.5", "-2.5", "0.25", "0.05", "-0.05", "3", "10", "-10", "0.001",
    "1.999", "-1.999", "20.1", "0.3", "5E-7", "99.99", "100",
]]


def _decimal_candidates():
    out = set()
    for i in range(-25, 26):
        for frac in ["", ".0", ".5", ".05", ".25", ".3", ".999", ".001", ".1", ".10", ".01",
                     ".2501", ".0000001", ".0000005", ".00000049", ".99", ".9999999"]:
            out.add(f"{'-' if i < 0 else ''}{abs(i)}{frac}")
    out |= {"99.99", "99.990", "99.991", "100", "100.0", "100.01", "-0.5", "1.5", "2.49999"}
    return sorted(out)


@pytest.mark.parametrize("lo", DEC_BOUNDS)
def test_decimal_ranges_exhaustive(lo):
    cands = _decimal_candidates()
    bad_forms = ["00", "01.5", "1.", ".5", "-", "1e5", "+1", ""]
    for hi in DEC_BOUNDS:
        if lo is not None and hi is not None and lo > hi:
            continue
        rx = re.compile(decimal_range_regex(lo, hi))
        for text in cands:
            value = Decimal(text)
            if text.startswith("-") and value == 0:
                continue  # "-0.0" may or may not be produced when 0 is in range; both are valid
            assert bool(rx.fullmatch(text)) == _in(value, lo, hi), (lo, hi, text)
        for text in bad_forms:
            assert not rx.fullmatch(text), (lo, hi, text)


def test_decimal_ranges_random():
    rng = random.Random(7)
    for _ in range(200):
        a, b = sorted(Decimal(rng.randint(-50000, 50000)) / Decimal(10 ** rng.randint(0, 4)) for _ in range(2))
        rx = re.compile(decimal_range_regex(a, b))
        for _ in range(40):
            digits = rng.randint(0, 6)
            v = Decimal(rng.randint(-60000, 60000)) / Decimal(10 ** rng.randint(0, 4))
            text = f"{v:.{digits}f}" if digits else str(int(v))
            if not JSON_DECIMAL.fullmatch(text) or (text.startswith("-") and Decimal(text) == 0):
                continue
            assert bool(rx.fullmatch(text)) == (a <= Decimal(text) <= b), (a, b, text)


def test_negative_zero_only_when_zero_in_range():
    assert not re.fullmatch(decimal_range_regex(Decimal("0.5"), None), "-0.0")
    assert not re.fullmatch(decimal_range_regex(None, Decimal("-0.5")), "-0.0")
    assert not re.fullmatch(integer_range_regex(-5, 5), "-0")


def test_tiny_exclusive_bound_regex_stays_flat():
    # 5e-324 (the next double after 0) has 323 zeros: runs of zeros become counted repeats
    rx = decimal_range_regex(Decimal("5E-324"), Decimal(1))
    assert len(rx) < 200
    assert re.fullmatch(rx, "0." + "0" * 323 + "5")
    assert not re.fullmatch(rx, "0." + "0" * 323 + "4")
    assert re.fullmatch(rx, "0.1") and re.fullmatch(rx, "1") and not re.fullmatch(rx, "0")
