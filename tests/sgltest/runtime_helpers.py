"""Helpers for driving an in-process scheduler in tests."""

from __future__ import annotations

import time
from typing import Dict, List, Optional

from sgl.runtime.ipc.messages import TokenizedGenerateReqInput
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.scheduler.scheduler import Scheduler

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "1, 2, 3, 4, 5,",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village nestled between two mountains, there lived an old clockmaker "
    "who had spent his whole life repairing the clocks of the townspeople. One winter morning,",
    "Q: What is the boiling point of water at sea level in Celsius?\nA:",
    "Translate to French: I would like a cup of coffee, please.",
    "The three primary colors are red,",
]
NEW_TOKENS = 64

# A mixed workload for comparing two schedulers that must give the same results: greedy, seeded
# sampling, penalties, stop strings, EOS, logprobs (see run_workload for arrivals and an abort).
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


def make_params(tokenizer, **kw) -> SamplingParams:
    params = SamplingParams.from_dict(kw)
    params.normalize(tokenizer)
    params.verify()
    return params


def submit(sched: Scheduler, tokenizer, rid: str, ids: List[int], **kw) -> None:
    logprob = {k: kw.pop(k) for k in ("return_logprob", "logprob_start_len", "top_logprobs_num") if k in kw}
    sched.handle(TokenizedGenerateReqInput(rid, None, ids, make_params(tokenizer, **kw), **logprob))


def run_all(sched: Scheduler, max_steps: int = 100000, timeout_s: float = 600.0) -> Dict[str, dict]:
    """Step until idle, checking KV integrity after every step; collect per-request results.

    `max_steps` bounds the steps that had a request to run; while only grammars are compiling (on
    the grammar backend's threads, for as long as the machine's load makes it take) the loop
    waits instead, within `timeout_s`."""
    results: Dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    steps = 0
    while sched.has_work() and steps < max_steps and time.monotonic() < deadline:
        compiling_only = not (sched.waiting or sched.running or sched.chunked_req) and sched.grammar is not None \
            and bool(sched.grammar.queue)
        outs = sched.step()
        collect(results, outs)
        sched.check_integrity()
        if compiling_only and not outs:
            time.sleep(0.005)
        else:
            steps += 1
    assert not sched.has_work(), f"scheduler did not drain ({steps} steps)"
    return results


def collect(results: Dict[str, dict], outs) -> None:
    """Fold one step's outputs into per-request results ({"ids", "out": the last output})."""
    for out in outs:
        r = results.setdefault(out.rid, {"ids": [], "out": None})
        r["ids"] = list(out.new_output_ids) if out.rewrite else r["ids"] + out.new_output_ids
        r["out"] = out


def run_workload(sched: Scheduler, tokenizer, late: bool = True, abort_after: Optional[int] = None) -> Dict[str, dict]:
    """WORKLOAD on PROMPTS; after a few steps two more requests arrive while the first decode, and
    optionally one more is aborted after `abort_after` steps."""
    ids = [tokenizer.encode(p) for p in PROMPTS]
    for i, kw in enumerate(WORKLOAD):
        submit(sched, tokenizer, f"r{i}", ids[i], **dict(kw))
    results: Dict[str, dict] = {}
    for _ in range(6):
        collect(results, sched.step())
        sched.check_integrity()
    if late:
        submit(sched, tokenizer, "late-a", ids[0] + ids[1], max_new_tokens=12, temperature=0, ignore_eos=True)
        submit(sched, tokenizer, "late-b", ids[0], max_new_tokens=12, temperature=0.9, seed=7)
    if abort_after is not None:
        submit(sched, tokenizer, "doomed", ids[2], max_new_tokens=200, temperature=0, ignore_eos=True)
        for _ in range(abort_after):
            collect(results, sched.step())
        sched.abort("doomed")
    rest = run_all(sched)
    for rid, r in rest.items():
        prev = results.get(rid)
        if prev is not None and not r["out"].rewrite:
            r["ids"] = prev["ids"] + r["ids"]
    results.update(rest)
    return results


def run_with_retraction(make_scheduler, tokenizer, **flags) -> Dict[str, dict]:
    """PROMPTS (greedy, 40 tokens each) on a KV pool so small that decoding must retract."""
    ids = [tokenizer.encode(p) for p in PROMPTS]
    sched = make_scheduler(max_total_tokens=sum(len(x) for x in ids) + 120, disable_radix_cache=True, **flags)
    for i, x in enumerate(ids):
        # not ignore_eos: admission estimates their length, and the small pool makes it retract
        submit(sched, tokenizer, f"q{i}", x, max_new_tokens=40, temperature=0, min_new_tokens=40)
    results = run_all(sched)
    assert sched.num_retractions > 0, "the small pool should force retraction"
    return results


def assert_same_results(a: Dict[str, dict], b: Dict[str, dict]) -> None:
    """Same ids, finish reasons and cached tokens; an aborted request agrees on what both produced."""
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
