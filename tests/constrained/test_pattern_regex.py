"""``pattern`` strings: generated JSON text decodes to a string matching the pattern (Python
``re``, as jsonschema uses), and can never break the JSON with a raw quote or backslash."""

import json
import random
import re

import jsonschema
import pytest

from sgl.runtime.constrained.pattern_regex import pattern_content_regex, pattern_min_length

PATTERNS = [
    r"^[A-Z]{3}-\d{4}$",
    r"^\d{3}-\d{3}-\d{4}$",
    r".*",
    r"^[^@]+@example\.com$",
    r"\D\W\S",
    r"(?:ab|cd)+?x",
    r"^a$|^b$",
    r"[\n\t]x",
    r"[é-ü]+",
    r'a"b\\c',
    r"^[a-z_][a-z0-9_]{0,7}$",
    r"(?s)a.b",
    r"[^a-z]{2}",
    r"colou?r",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_samples_match(pattern, regex_sampler):
    sample = regex_sampler('"' + pattern_content_regex(pattern) + '"')
    validator = jsonschema.Draft202012Validator({"type": "string", "pattern": pattern})
    lo = pattern_min_length(pattern)
    rng = random.Random(len(pattern))
    for _ in range(200):
        text = sample(rng, max_len=60)
        value = json.loads(text)
        assert re.search(pattern, value), (pattern, value)
        assert lo <= len(value)
        validator.validate(value)


@pytest.mark.parametrize("pattern, reason", [
    (r"(a)(?=b)", "look-around"),
    (r"(a)\1", "back-references"),
    (r"\bfoo", "boundary"),
    (r"a^b", "anchor"),
    (r"(?i)abc", "inline flags"),
    (r"(?>ab)", "atomic"),
    (r"(ab", "invalid pattern"),
])
def test_unsupported_patterns_are_refused(pattern, reason):
    with pytest.raises(ValueError, match=reason):
        pattern_content_regex(pattern)


def test_quote_and_backslash_literals_are_json_escaped():
    rx = pattern_content_regex(r'a"b\\c')
    assert re.fullmatch(rx, 'a\\"b\\\\c')
    assert not re.fullmatch(rx, 'a"b\\c')


@pytest.mark.parametrize("pattern, max_length", [(r"^[a-z]+_[a-z]+$", 9), (r"(ab)*c+", 7), (r".*", 4), (r"x{2,}", 2)])
def test_max_length_caps_unbounded_repeats(pattern, max_length, regex_sampler):
    sample = regex_sampler('"' + pattern_content_regex(pattern, max_length) + '"')
    rng = random.Random(max_length)
    lengths = set()
    for _ in range(300):
        value = json.loads(sample(rng, stop_prob=0.05))
        assert re.fullmatch(pattern.strip("^$"), value) and len(value) <= max_length, value
        lengths.add(len(value))
    assert max(lengths) >= max_length - 2  # the cap is the largest that fits, not a tiny one


def test_max_length_too_small_for_pattern():
    with pytest.raises(ValueError, match="longer than maxLength 3"):
        pattern_content_regex(r"abcd+", 3)
