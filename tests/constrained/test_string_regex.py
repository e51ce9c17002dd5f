"""Format and plain-string regexes: every generated value is valid JSON text and passes the
jsonschema format checker (2020-12 semantics); dates are exact per month and leap year."""

import datetime
import json
import random
import re
import string
from urllib.parse import urlsplit

import idna
import jsonschema
import pytest

from sgl.runtime.constrained.string_regex import (
    JSON_STRING,
    SUPPORTED_FORMATS,
    escape_literal,
    format_length_bounds,
    format_string_regex,
    string_length_regex,
)

CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER
URI_CHARS = set(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


def _valid_uri(value: str) -> bool:
    parts = urlsplit(value)
    pct_ok = all(re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 1:i + 3]) for i, c in enumerate(value) if c == "%")
    return bool(parts.scheme and parts.netloc) and set(value) <= URI_CHARS and pct_ok


def _valid_hostname(value: str) -> bool:
    labels = value.split(".")
    idna.encode(value)  # raises on an invalid IDNA/LDH name
    return len(value) <= 253 and all(0 < len(label) <= 63 for label in labels)


@pytest.mark.parametrize("fmt", sorted(SUPPORTED_FORMATS))
def test_format_samples_validate(fmt, regex_sampler):
    regex = format_string_regex(fmt)
    sample = regex_sampler(regex)
    rng = random.Random(hash(fmt) & 0xFFFF)
    lo, hi = format_length_bounds(fmt)
    validator = jsonschema.Draft202012Validator({"type": "string", "format": fmt}, format_checker=CHECKER)
    for _ in range(150):
        text = sample(rng)
        value = json.loads(text)  # valid JSON text: no raw quote, backslash or control char
        assert isinstance(value, str) and '"' not in value and "\\" not in value
        assert lo <= len(value) <= hi
        validator.validate(value)
        if fmt.startswith(("uri", "iri")):
            assert _valid_uri(value), value
        if fmt.endswith("hostname"):
            assert _valid_hostname(value), value


def test_date_regex_is_exact_per_month_and_leap_year():
    rx = re.compile(format_string_regex("date"))
    for year in [1, 4, 100, 400, 1900, 2000, 2023, 2024, 2100, 9996, 9999]:
        for month in range(0, 14):
            for day in range(0, 33):
                text = f'"{year:04d}-{month:02d}-{day:02d}"'
                try:
                    datetime.date(year, month, day)
                    valid = True
                except ValueError:
                    valid = False
                assert bool(rx.fullmatch(text)) == valid, text
    assert not rx.fullmatch('"0000-01-01"')


def test_format_outside_the_spec_has_no_regex():
    """format_string_regex knows the specification's formats only (the schema walker treats any
    other format as an annotation and generates a plain string)."""
    with pytest.raises(ValueError, match="unsupported JSON schema format: semver"):
        format_string_regex("semver")


def test_string_length_regex_counts_decoded_characters():
    rx = re.compile(string_length_regex(2, 3))
    assert rx.fullmatch('"ab"') and rx.fullmatch('"a\\"b"') and rx.fullmatch('"\\n\\t"')
    assert not rx.fullmatch('"a"') and not rx.fullmatch('"abcd"') and not rx.fullmatch('"a"b"')
    with pytest.raises(ValueError, match="minLength 3 > maxLength 2"):
        string_length_regex(3, 2)


def test_plain_string_never_holds_raw_quote_or_control(regex_sampler):
    sample = regex_sampler(JSON_STRING)
    rng = random.Random(3)
    for _ in range(300):
        text = sample(rng)
        assert isinstance(json.loads(text), str)


def test_escape_literal_roundtrip():
    rng = random.Random(5)
    alphabet = string.printable + "\\^$.|?*+()[]{}é日😀\x00\x1f\x7f"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert re.fullmatch(escape_literal(text), text, flags=re.DOTALL)
