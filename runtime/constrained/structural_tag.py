"""Structural tags: free text, with constrained spans that open at a trigger (SGLang's
`structural_tag`, as in xgrammar).

A structural tag is JSON::

    {"type": "structural_tag",                     # optional
     "structures": [{"begin": "<fn=get_weather>", "schema": {...}, "end": "</fn>"}, ...],
     "triggers": ["<fn="]}

The output is free until one of the triggers appears in it. From the trigger's first character
on, the output must be one of the structures whose `begin` starts with that trigger: the begin
text, then a JSON value valid under `schema`, then the end text. After the end text the output is
free again (and a trigger opens the next span). Tool calling's `tool_choice: auto` is built on
this: the model may answer in prose, and once a call begins its arguments are guaranteed valid.

The scheduler keeps one compiled grammar per trigger (a regex over the structures it opens) and
switches a request between free decoding and that grammar (`scheduler/grammar.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

PARAM = "structural_tag"
# Bounds on one request's tag: each trigger is a grammar compiled for it.
MAX_TRIGGERS = 16
MAX_TRIGGER_CHARS = 64


@dataclass(frozen=True)
class Structure:
    begin: str
    schema: str  # JSON text of the schema of the value between begin and end
    end: str


@dataclass(frozen=True)
class StructuralTag:
    structures: Tuple[Structure, ...]
    triggers: Tuple[str, ...]

    def trigger_regexes(self, schema_regex: Callable[[str], str]) -> Dict[str, str]:
        """Per trigger, the regex of the spans it opens; ``schema_regex(schema_text)`` is the
        backend's JSON-schema compiler."""
        out = {}
        for trigger in self.triggers:
            parts = [re.escape(s.begin) + schema_regex(s.schema) + re.escape(s.end)
                     for s in self.structures if s.begin.startswith(trigger)]
            out[trigger] = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        return out


def _fail(message: str) -> ValueError:
    return ValueError(f"{PARAM}: {message}")


def parse_structural_tag(text: Any) -> StructuralTag:
    """A StructuralTag from its JSON (text or dict); ValueError naming `structural_tag` otherwise."""
    if isinstance(text, str):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(f"not valid JSON ({e})") from None
    else:
        spec = text
    if not isinstance(spec, dict):
        raise _fail("must be an object with 'structures' and 'triggers'")
    unknown = sorted(set(spec) - {"type", "structures", "triggers"})
    if unknown:
        raise _fail(f"unknown key {unknown[0]!r} (expected type, structures, triggers)")
    if spec.get("type", PARAM) != PARAM:
        raise _fail(f"type must be {PARAM!r}")
    structures = spec.get("structures")
    triggers = spec.get("triggers")
    if not isinstance(structures, list) or not structures:
        raise _fail("structures must be a non-empty list of {begin, schema, end}")
    if not isinstance(triggers, list) or not triggers or len(triggers) > MAX_TRIGGERS:
        raise _fail(f"triggers must be a list of 1 to {MAX_TRIGGERS} strings")
    for t in triggers:
        if not isinstance(t, str) or not t or len(t) > MAX_TRIGGER_CHARS:
            raise _fail(f"each trigger must be a non-empty string of at most {MAX_TRIGGER_CHARS} characters")
    parsed = []
    for i, s in enumerate(structures):
        if not isinstance(s, dict) or set(s) - {"begin", "schema", "end"}:
            raise _fail(f"structures[{i}] must be an object with begin, schema and end")
        begin, end, schema = s.get("begin"), s.get("end", ""), s.get("schema", {})
        if not isinstance(begin, str) or not isinstance(end, str):
            raise _fail(f"structures[{i}]: begin and end must be strings")
        if not any(begin.startswith(t) for t in triggers):
            raise _fail(f"structures[{i}].begin {begin!r} does not start with any trigger")
        if not isinstance(schema, (dict, bool)):
            raise _fail(f"structures[{i}].schema must be a JSON schema object")
        parsed.append(Structure(begin, json.dumps(schema), end))
    unused = [t for t in triggers if not any(s.begin.startswith(t) for s in parsed)]
    if unused:
        raise _fail(f"trigger {unused[0]!r} begins no structure")
    return StructuralTag(tuple(parsed), tuple(dict.fromkeys(triggers)))
