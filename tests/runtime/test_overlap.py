"""The overlap scheduler gives exactly the results of the plain one: greedy, seeded sampling,
penalties, stop strings, EOS, logprobs, requests arriving mid-run, aborts, chunked prefill,
retraction and constrained requests (masks filled while the next forward runs, jump-forward
dropping the in-flight token)."""

import json

import pytest

from sgltest.runtime_helpers import PROMPTS, assert_same_results, run_all, run_with_retraction, run_workload, submit

@pytest.mark.parametrize(
    "flags",
    [{}, {"chunked_prefill_size": 12}, {"disable_radix_cache": True}],
    ids=["radix", "chunked", "no-radix"],
)
def test_overlap_equals_plain(make_scheduler, tokenizer, flags):
    plain = make_scheduler(disable_overlap_schedule=True, **flags)
    overlap = make_scheduler(**flags)
    assert overlap.enable_overlap and not plain.enable_overlap
    a = run_workload(plain, tokenizer, abort_after=3)
    b = run_workload(overlap, tokenizer, abort_after=3)
    assert_same_results(a, b)
    # logprobs are the same numbers too
    lp_a = [x[0] for x in a["r6"]["out"].output_token_logprobs or []]
    assert plain.num_overlapped_steps == 0
    assert overlap.num_overlapped_steps > 10, "the overlap scheduler never overlapped"
    assert lp_a, "r6 asked for logprobs"
    overlap.check_integrity()


def test_overlap_with_retraction(make_scheduler, tokenizer):
    plain = run_with_retraction(make_scheduler, tokenizer, disable_overlap_schedule=True)
    overlap = run_with_retraction(make_scheduler, tokenizer)
    assert {rid: r["ids"] for rid, r in plain.items()} == {rid: r["ids"] for rid, r in overlap.items()}


def test_overlap_with_constrained(make_scheduler, tokenizer):
    """Constrained requests keep the overlap (sampling deferred until the grammars hold the
    in-flight tokens) and give the plain scheduler's tokens, jump-forward included."""
    ids = [tokenizer.encode(p) for p in PROMPTS]
    schema = json.dumps({"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "population_in_millions": {"type": "integer"},
        "is_capital": {"type": "boolean"}}, "required": ["city", "population_in_millions", "is_capital"]})
    runs, scheds = [], []
    for disable in (True, False):
        sched = make_scheduler(disable_overlap_schedule=disable)
        submit(sched, tokenizer, "plain", ids[0], max_new_tokens=40, temperature=0, ignore_eos=True)
        submit(sched, tokenizer, "regex", ids[5], max_new_tokens=16, temperature=0,
               regex=r"(100|[1-9][0-9]?) degrees")
        submit(sched, tokenizer, "json", ids[1], max_new_tokens=80, temperature=0, json_schema=schema)
        runs.append(run_all(sched))
        scheds.append(sched)
        assert not sched.grammar.queue
    for rid in ("plain", "regex", "json"):
        assert runs[0][rid]["ids"] == runs[1][rid]["ids"], rid
    text = tokenizer.decode(runs[1]["regex"]["ids"], skip_special_tokens=True)
    assert text.endswith(" degrees"), text
    doc = json.loads(tokenizer.decode(runs[1]["json"]["ids"], skip_special_tokens=True))
    assert set(doc) == {"city", "population_in_millions", "is_capital"}
    plain, overlap = scheds
    assert overlap.grammar.num_jumps == plain.grammar.num_jumps > 0, "the schema's keys were not jumped over"
    assert overlap.num_overlapped_steps > 10, "constrained requests turned the overlap off"
    overlap.check_integrity()


def test_abort_while_prefill_in_flight(make_scheduler, tokenizer):
    """Under overlap a request being prefilled is in no queue until its batch is processed; an abort
    arriving then still stops it (it must not decode to max_new_tokens)."""
    sched = make_scheduler()
    submit(sched, tokenizer, "x", tokenizer.encode(PROMPTS[0]), max_new_tokens=500, temperature=0, ignore_eos=True)
    sched.step()
    assert sched._inflight is not None and not sched.running and not sched.waiting
    sched.abort("x")
    res = run_all(sched, max_steps=20)
    assert res["x"]["out"].finished_reason.to_json()["type"] == "abort"
    assert len(res["x"]["ids"]) <= 1
