"""The overlap scheduler gives exactly the results of the plain one: greedy, seeded sampling,
penalties, stop strings, EOS, logprobs, requests arriving mid-run, aborts, chunked prefill,
retraction and constrained requests (which fall back to launch-then-process)."""

import pytest

from sgltest.runtime_helpers import PROMPTS, run_all, submit

WORKLOAD = [
    dict(max_new_tokens=24, temperature=0, ignore_eos=True),
    dict(max_new_tokens=5, temperature=0),
    dict(max_new_tokens=1, temperature=0),
    dict(max_new_tokens=20, temperature=0.9, top_p=0.9, seed=11),
    dict(max_new_tokens=20, temperature=0.7, top_k=20, frequency_penalty=0.5, presence_penalty=0.3, seed=5),
    dict(max_new_tokens=20, temperature=0, repetition_penalty=1.3, min_new_tokens=4),
    dict(max_new_tokens=30, temperature=0, stop=[","], return_logprob=True, top_logprobs_num=2),
    dict(max_new_tokens=16, temperature=0.8, seed=3, stop_token_ids=[13]),
]


def _run(sched, tokenizer, late=True, abort_after=None):
    ids = [tokenizer.encode(p) for p in PROMPTS]
    for i, kw in enumerate(WORKLOAD):
        submit(sched, tokenizer, f"r{i}", ids[i], **dict(kw))
    results = {}

    def collect(outs):
        for out in outs:
            r = results.setdefault(out.rid, {"ids": [], "out": None})
            r["ids"] = list(out.new_output_ids) if out.rewrite else r["ids"] + out.new_output_ids
            r["out"] = out

    for step in range(6):  # a few steps, then more requests arrive while decoding runs
        collect(sched.step())
        sched.check_integrity()
    if late:
        submit(sched, tokenizer, "late-a", ids[0] + ids[1], max_new_tokens=12, temperature=0, ignore_eos=True)
        submit(sched, tokenizer, "late-b", ids[0], max_new_tokens=12, temperature=0.9, seed=7)
    if abort_after is not None:
        submit(sched, tokenizer, "doomed", ids[2], max_new_tokens=200, temperature=0, ignore_eos=True)
        for _ in range(abort_after):
            collect(sched.step())
        sched.abort("doomed")
    rest = run_all(sched)
    for rid, r in rest.items():
        prev = results.get(rid)
        if prev is not None and not r["out"].rewrite:
            r["ids"] = prev["ids"] + r["ids"]
    results.update(rest)
    return results


def _compare(a, b):
    assert a.keys() == b.keys()
    if "doomed" in a:  # aborted after a number of steps: how many tokens it got is timing, not result
        da, db = a["doomed"]["ids"], b["doomed"]["ids"]
        n = min(len(da), len(db))
        assert da[:n] == db[:n]
        assert a["doomed"]["out"].finished_reason.to_json()["type"] == "abort"
        assert b["doomed"]["out"].finished_reason.to_json()["type"] == "abort"
    for rid in [r for r in a if r != "doomed"]:
        assert a[rid]["ids"] == b[rid]["ids"], rid
        fa, fb = a[rid]["out"].finished_reason, b[rid]["out"].finished_reason
        assert type(fa) is type(fb), rid
        la, lb = a[rid]["out"], b[rid]["out"]
        assert la.completion_tokens == lb.completion_tokens
        assert la.cached_tokens == lb.cached_tokens, rid


@pytest.mark.parametrize(
    "flags",
    [{}, {"chunked_prefill_size": 12}, {"disable_radix_cache": True}],
    ids=["radix", "chunked", "no-radix"],
)
def test_overlap_equals_plain(make_scheduler, tokenizer, flags):
    plain = make_scheduler(disable_overlap_schedule=True, **flags)
    overlap = make_scheduler(**flags)
    assert overlap.enable_overlap and not plain.enable_overlap
    a = _run(plain, tokenizer, abort_after=3)
    b = _run(overlap, tokenizer, abort_after=3)
    _compare(a, b)
    # logprobs are the same numbers too
    lp_a = [x[0] for x in a["r6"]["out"].output_token_logprobs or []]
    assert plain.num_overlapped_steps == 0
    assert overlap.num_overlapped_steps > 10, "the overlap scheduler never overlapped"
    assert lp_a, "r6 asked for logprobs"
    overlap.check_integrity()


def test_overlap_with_retraction(make_scheduler, tokenizer):
    ids = [tokenizer.encode(p) for p in PROMPTS]
    total = sum(len(x) for x in ids)
    runs = []
    for disable in (True, False):
        sched = make_scheduler(max_total_tokens=total + 120, disable_radix_cache=True,
                               disable_overlap_schedule=disable)
        for i, x in enumerate(ids):
            # not ignore_eos: admission estimates their length, and the small pool makes it retract
            submit(sched, tokenizer, f"q{i}", x, max_new_tokens=40, temperature=0, min_new_tokens=40)
        runs.append(run_all(sched))
        assert sched.num_retractions > 0, "the small pool should force retraction"
    for rid in runs[0]:
        assert runs[0][rid]["ids"] == runs[1][rid]["ids"], rid


def test_overlap_with_constrained(make_scheduler, tokenizer):
    ids = [tokenizer.encode(p) for p in PROMPTS]
    runs = []
    for disable in (True, False):
        sched = make_scheduler(disable_overlap_schedule=disable)
        submit(sched, tokenizer, "plain", ids[0], max_new_tokens=16, temperature=0, ignore_eos=True)
        submit(sched, tokenizer, "regex", ids[5], max_new_tokens=16, temperature=0,
               regex=r"(100|[1-9][0-9]?) degrees")
        runs.append(run_all(sched))
        if grammar_wait := sched.grammar:
            assert not grammar_wait.queue
    assert runs[0]["plain"]["ids"] == runs[1]["plain"]["ids"]
    assert runs[0]["regex"]["ids"] == runs[1]["regex"]["ids"]
    text = tokenizer.decode(runs[1]["regex"]["ids"], skip_special_tokens=True)
    assert text.endswith(" degrees"), text


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
