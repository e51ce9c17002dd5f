"""Helpers for driving an in-process scheduler in tests."""

from __future__ import annotations

from typing import Dict, List

from sgl.runtime.messages import TokenizedGenerateReqInput
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

def make_params(tokenizer, **kw) -> SamplingParams:
    params = SamplingParams.from_dict(kw)
    params.normalize(tokenizer)
    params.verify()
    return params


def submit(sched: Scheduler, tokenizer, rid: str, ids: List[int], **kw) -> None:
    logprob = {k: kw.pop(k) for k in ("return_logprob", "logprob_start_len", "top_logprobs_num") if k in kw}
    sched.handle(TokenizedGenerateReqInput(rid, None, ids, make_params(tokenizer, **kw), **logprob))


def run_all(sched: Scheduler, max_steps: int = 100000) -> Dict[str, dict]:
    """Step until idle, checking KV integrity after every step; collect per-request results."""
    results: Dict[str, dict] = {}
    for _ in range(max_steps):
        if not sched.has_work():
            break
        for out in sched.step():
            r = results.setdefault(out.rid, {"ids": [], "out": None})
            r["ids"] = list(out.new_output_ids) if out.rewrite else r["ids"] + out.new_output_ids
            r["out"] = out
        sched.check_integrity()
    assert not sched.has_work(), "scheduler did not drain"
    return results
