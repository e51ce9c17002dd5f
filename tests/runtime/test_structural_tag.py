"""Structural tags through the scheduler: free text, a constrained span from a trigger on, then
free text again; a trigger that starts inside a token rewrites the output; overlap on and off agree."""

import json
import re

import pytest

from sgl.runtime.constrained.structural_tag import parse_structural_tag
from sgltest.runtime_helpers import run_all, submit

PROMPT = "The capital of France is"  # greedy: " Paris.\n\nThe answer is: ..."
NUMBER = {"type": "integer", "minimum": 100, "maximum": 999}


def _tag(trigger, begin=None, end="!"):
    return json.dumps({"structures": [{"begin": begin or trigger, "schema": NUMBER, "end": end}],
                       "triggers": [trigger]})


@pytest.fixture(scope="module")
def ids(tokenizer):
    return tokenizer.encode(PROMPT, add_special_tokens=False)


def _run(make_scheduler, tokenizer, ids, overlap, **extra):
    sched = make_scheduler(disable_overlap_schedule=not overlap)
    submit(sched, tokenizer, "free", ids, max_new_tokens=24, temperature=0)
    # " Paris" is one token: the span opens on a token boundary; "aris" starts inside " Paris"
    for trigger in (" Paris", "aris", "."):
        submit(sched, tokenizer, trigger, ids, max_new_tokens=24, temperature=0, structural_tag=_tag(trigger), **extra)
    res = run_all(sched)
    return {rid: tokenizer.decode(r["ids"], skip_special_tokens=True) for rid, r in res.items()}, res


@pytest.mark.parametrize("overlap", [True, False])
def test_spans_open_at_triggers_and_close_after_their_end(make_scheduler, tokenizer, ids, overlap):
    texts, _ = _run(make_scheduler, tokenizer, ids, overlap)
    assert texts["free"].startswith(" Paris.")
    for trigger in (" Paris", "aris", "."):
        text = texts[trigger]
        at = text.index(trigger) + len(trigger)
        # the free text before the trigger is the model's own; from the trigger on, begin + number + end
        assert texts["free"].startswith(text[:at]), (trigger, text)
        m = re.match(r"(\d+)!", text[at:])
        assert m and 100 <= int(m.group(1)) <= 999, (trigger, text)
        # free text follows the span (greedy continues; no further constraint)
        assert len(text) > at + len(m.group(0)), (trigger, text)


def test_overlap_and_plain_scheduling_agree(make_scheduler, tokenizer, ids):
    assert _run(make_scheduler, tokenizer, ids, True)[0] == _run(make_scheduler, tokenizer, ids, False)[0]


def test_with_logprobs_a_span_opens_only_on_a_token_boundary(make_scheduler, tokenizer, ids):
    # a rewrite would leave tokens without logprobs: a trigger inside a token leaves the text free
    plain, _ = _run(make_scheduler, tokenizer, ids, True)
    texts, _ = _run(make_scheduler, tokenizer, ids, True, return_logprob=True)
    assert texts[" Paris"] == plain[" Paris"]
    assert texts["aris"] == texts["free"]


def test_bad_tags_fail_their_request_only(make_scheduler, tokenizer, ids):
    sched = make_scheduler()
    submit(sched, tokenizer, "ok", ids, max_new_tokens=4, temperature=0)
    bad = json.dumps({"structures": [{"begin": " Paris", "schema": {"type": "integer", "multipleOf": 7},
                                      "end": ""}], "triggers": [" Paris"]})
    submit(sched, tokenizer, "bad", ids, max_new_tokens=4, temperature=0, structural_tag=bad)
    res = run_all(sched)
    assert res["ok"]["out"].completion_tokens == 4
    reason = res["bad"]["out"].finished_reason.to_json()
    assert reason["status_code"] == 400 and "multipleOf" in reason["message"]


@pytest.mark.parametrize("spec, words", [
    ("not json", "not valid JSON"),
    ({"structures": [], "triggers": ["a"]}, "structures"),
    ({"structures": [{"begin": "a", "schema": {}, "end": ""}], "triggers": ["b"]}, "does not start with"),
    ({"structures": [{"begin": "a", "schema": {}, "end": ""}], "triggers": ["a", "c"]}, "begins no structure"),
    ({"structures": [{"begin": "a", "schema": 3, "end": ""}], "triggers": ["a"]}, "schema"),
    ({"structures": [{"begin": "a", "schema": {}}], "triggers": ["a"], "extra": 1}, "unknown key"),
])
def test_malformed_tags_name_the_parameter(spec, words):
    with pytest.raises(ValueError) as e:
        parse_structural_tag(spec)
    assert str(e.value).startswith("structural_tag:") and words in str(e.value)
