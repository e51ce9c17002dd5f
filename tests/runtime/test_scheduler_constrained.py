"""Constrained decoding through the scheduler: masks, compile-error isolation, jump-forward."""

import json
import re

import jsonschema
import pytest

from runtime_helpers import run_all, submit

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_full_name_field": {"type": "string", "maxLength": 12},
        "customer_age_in_years": {"type": "integer", "minimum": 0, "maximum": 120},
        "customer_is_premium_member": {"type": "boolean"},
    },
    "required": ["customer_full_name_field", "customer_age_in_years", "customer_is_premium_member"],
}


@pytest.fixture(scope="module")
def chat_ids(tokenizer):
    msgs = [{"role": "user", "content": "Give me a JSON object describing a customer."}]
    return tokenizer.encode(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))


def _text(tokenizer, res, rid):
    return tokenizer.decode(res[rid]["ids"], skip_special_tokens=True)


def test_regex_and_schema_outputs_validate(make_scheduler, tokenizer, chat_ids):
    sched = make_scheduler()
    ipv4 = r"((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"
    for i in range(3):
        submit(sched, tokenizer, f"ip{i}", chat_ids, max_new_tokens=24, temperature=1.0, regex=ipv4)
        submit(sched, tokenizer, f"js{i}", chat_ids, max_new_tokens=96, temperature=1.0, json_schema=json.dumps(SCHEMA))
    res = run_all(sched)
    for i in range(3):
        assert re.fullmatch(ipv4, _text(tokenizer, res, f"ip{i}"))
        jsonschema.validate(json.loads(_text(tokenizer, res, f"js{i}")), SCHEMA)


def test_compile_error_fails_only_that_request(make_scheduler, tokenizer, chat_ids):
    sched = make_scheduler()
    submit(sched, tokenizer, "good", chat_ids, max_new_tokens=8, temperature=0)
    submit(sched, tokenizer, "bad-regex", chat_ids, max_new_tokens=8, regex="(((")
    bad_schema = json.dumps({"type": "array", "items": {"type": "integer"}, "uniqueItems": True})
    submit(sched, tokenizer, "bad-schema", chat_ids, max_new_tokens=8, json_schema=bad_schema)
    submit(sched, tokenizer, "good-regex", chat_ids, max_new_tokens=8, regex="(yes|no)")
    res = run_all(sched)
    assert res["good"]["out"].completion_tokens == 8
    assert _text(tokenizer, res, "good-regex") in ("yes", "no")
    for rid, word in (("bad-regex", "regex"), ("bad-schema", "uniqueItems")):
        reason = res[rid]["out"].finished_reason.to_json()
        assert reason["type"] == "abort" and reason["status_code"] == 400 and word in reason["message"]


def test_jump_forward_skips_decode_steps_and_keeps_text(make_scheduler, tokenizer, chat_ids):
    results = {}
    for jump in (True, False):
        sched = make_scheduler(constrained_json_whitespace_pattern="", disable_jump_forward=not jump)
        submit(sched, tokenizer, "r", chat_ids, max_new_tokens=96, temperature=0, json_schema=json.dumps(SCHEMA))
        req_out = run_all(sched)
        results[jump] = (_text(tokenizer, req_out, "r"), sched)
    text_on, sched_on = results[True]
    text_off, sched_off = results[False]
    jsonschema.validate(json.loads(text_on), SCHEMA)
    assert text_on == text_off
    assert sched_on.grammar.num_jumps > 0 and sched_on.grammar.num_forced_tokens >= 10
    assert sched_off.grammar.num_jumps == 0
