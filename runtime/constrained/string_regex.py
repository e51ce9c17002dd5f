"""Regexes for JSON string values: plain strings, ``format`` strings and ``pattern`` strings.

Every regex here describes the *JSON text* of a string value, quotes included, and can never emit
a raw ``"``, a raw ``\\`` or a raw control character: such output would not parse as JSON.
(outlines-core 0.2.14's ``email`` regex allows a quoted local part with a raw ``"`` inside, and
its ``pattern`` strings are pasted between quotes unchecked; this module replaces both.)

Format regexes produce a subset of the values the ``jsonschema`` format checkers accept (real
calendar dates incl. leap years, RFC 3339 times with offsets, IPv4 without leading zeros, ...).
"""

from typing import Dict, Optional, Tuple

try:  # Python >= 3.11
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore

__all__ = [
    "JSON_STRING",
    "JSON_STRING_CHAR",
    "string_length_regex",
    "format_string_regex",
    "format_length_bounds",
    "SUPPORTED_FORMATS",
    "escape_literal",
]

# One decoded character of a JSON string: an unescaped safe character or a short escape.
# C1 controls (0x7f-0x9f) are legal JSON but never useful, so they are left out.
JSON_PLAIN_CHAR = r'[^"\\\x00-\x1f\x7f-\x9f]'  # an unescaped safe character only: one class
JSON_STRING_CHAR = "(?:" + JSON_PLAIN_CHAR + r'|\\["\\/bfnrt])'
JSON_STRING = '"' + JSON_STRING_CHAR + '*"'

# Characters that are regex syntax outside a character class in Rust, Python and interegular.
_META = set("\\.^$|?*+()[]{}")


def escape_literal(text: str) -> str:
    """Regex matching exactly ``text`` (portable across the three regex dialects we use)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _META:
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append("\\x%02x" % code)
        else:
            out.append(ch)
    return "".join(out)


def string_length_regex(min_length: int, max_length: Optional[int], counted_escapes: bool = True) -> str:
    """JSON strings whose decoded length is in [min_length, max_length]. ``counted_escapes=False``:
    a counted length ({m,n} or {m,}) counts unescaped characters only (a valid subset)."""
    if not counted_escapes and (min_length or max_length is not None):
        char = JSON_PLAIN_CHAR
    else:
        char = JSON_STRING_CHAR
    if max_length is None:
        rep = "{%d,}" % min_length if min_length else "*"
    else:
        if max_length < min_length:
            raise ValueError(f"minLength {min_length} > maxLength {max_length}")
        rep = "{%d,%d}" % (min_length, max_length)
    return '"' + char + rep + '"'


# ---------------------------------------------------------------- formats (string content only)

_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999: year 0 is invalid
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_HOUR = "(?:[01][0-9]|2[0-3])"
_MIN_SEC = "[0-5][0-9]"
_OFFSET = f"(?:Z|[+-]{_HOUR}:{_MIN_SEC})"
_TIME = f"{_HOUR}:{_MIN_SEC}:{_MIN_SEC}(?:\\.[0-9]{{1,9}})?{_OFFSET}"
_DATE_TIME = f"{_DATE}T{_TIME}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(?:\\.{_OCTET}){{3}}"
_IPV6 = "(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}"
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Every format below has a bounded length (so "format" can sit next to pydantic's
# "maxLength": 2083 on URLs). LDH labels never contain "--" (IDNA reserves it) and stay under
# 63 characters; at most four labels keep a host name under the 253-character limit.
_LABEL = "[a-zA-Z0-9]{1,20}(?:-[a-zA-Z0-9]{1,20}){0,2}"
_HOSTNAME = f"{_LABEL}(?:\\.{_LABEL}){{0,3}}"
_DOMAIN = f"{_LABEL}(?:\\.{_LABEL}){{0,2}}\\.[a-zA-Z]{{2,10}}"
_EMAIL_ATOM = "[a-zA-Z0-9_%+-]{1,16}"
_EMAIL_DOMAIN = "[a-zA-Z0-9]{1,20}(?:-[a-zA-Z0-9]{1,20})?(?:\\.[a-zA-Z0-9]{1,20}){0,1}\\.[a-zA-Z]{2,10}"
_EMAIL = f"{_EMAIL_ATOM}(?:\\.{_EMAIL_ATOM}){{0,2}}@{_EMAIL_DOMAIN}"
# RFC 3986 pchar: unreserved / pct-encoded / sub-delims / ":" / "@"
_PCHAR = "(?:[a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9a-fA-F]{2})"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
_URI = (
    f"(?:https?|ftp)://(?:{_DOMAIN}|{_IPV4})(?::{_PORT})?"
    f"(?:/{_PCHAR}{{0,32}}){{0,8}}(?:\\?(?:{_PCHAR}|[/?]){{0,64}})?(?:#(?:{_PCHAR}|[/?]){{0,32}})?"
)

# A URI without "{...}" expressions is a URI template; RFC 6570 literals exclude "'".
_URI_TEMPLATE = _URI.replace("'", "")
_POINTER = "(?:/(?:[a-zA-Z0-9_.-]|~[01]){0,32}){0,8}"
# Subsets that are always valid: durations of one unit, regexes made of literal characters.
_DURATION = "P(?:[0-9]{1,4}[WD]|T[0-9]{1,4}[HMS])"
_REGEX_LITERAL = "[a-zA-Z0-9 _-]{0,32}"

# Every format of the JSON Schema specification (2020-12 and older drafts). A format outside it
# is an annotation that validators ignore, and so does the compiler (json_schema.py).
_FORMATS: Dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE_TIME,
    "email": _EMAIL,
    "idn-email": _EMAIL,
    "hostname": _HOSTNAME,
    "idn-hostname": _HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uuid": _UUID,
    "uri": _URI,
    "uri-reference": _URI,
    "iri": _URI,
    "iri-reference": _URI,
    "uri-template": _URI_TEMPLATE,
    "json-pointer": _POINTER,
    # no digit after a 0: jsonschema's checker (4.26) rejects e.g. "101"
    "relative-json-pointer": f"(?:0|[1-9][1-9]{{0,2}})(?:#|{_POINTER})",
    "duration": _DURATION,
    "regex": _REGEX_LITERAL,
}
SUPPORTED_FORMATS = frozenset(_FORMATS)


def format_length_bounds(fmt: str) -> Tuple[int, int]:
    """(min, max) length in characters of the values ``format_string_regex(fmt)`` produces."""
    format_string_regex(fmt)  # validates the name
    return sre_parse.parse(_FORMATS[fmt]).getwidth()


def format_string_regex(fmt: str) -> str:
    """Quoted JSON string regex for a ``format`` value; ValueError for formats we can't enforce."""
    content = _FORMATS.get(fmt)
    if content is None:
        raise ValueError(
            f"unsupported JSON schema format: {fmt} (supported: {', '.join(sorted(_FORMATS))})"
        )
    return '"' + content + '"'

