"""`REGEX_INT` (gen_int / dtype=int): JSON integers that fit the length of a signed 64-bit integer."""

import re

import pytest

import sgl.ir
import sgl.sampling

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.mark.parametrize("text", [
    str(INT64_MAX), str(INT64_MIN), "0", "-0", "7", "-42", "1" + "0" * 18, "9" * 19, "-" + "9" * 19, "12 ", "12\n",
])
def test_accepts_json_integers_up_to_19_digits(text):
    assert re.fullmatch(sgl.ir.REGEX_INT, text)


@pytest.mark.parametrize("text", [
    str(INT64_MAX + 1) + "0", "1" * 20, "-" + "1" * 20, "9" * 128, "+5", "007", "-01", "", "-", "1.5", "1e3",
])
def test_rejects_longer_or_non_json_integers(text):
    assert not re.fullmatch(sgl.ir.REGEX_INT, text)


def test_the_runtime_constrains_with_the_same_regex():
    # A program's gen_int and the server's dtype=int must not drift apart.
    constrained = pytest.importorskip("sgl.runtime.constrained")
    assert constrained.REGEX_INT is sgl.sampling.REGEX_INT == sgl.ir.REGEX_INT
    assert constrained.dtype_regex(int) == sgl.ir.REGEX_INT
