"""--enable-mixed-chunk: the running requests' decode step rides in the prefill's forward. Results
equal those of separate prefill and decode forwards (same workload as the overlap tests: greedy,
seeded sampling, penalties, stops, logprobs, late arrivals, an abort), with the overlap scheduler
on and off, chunked prefill, no radix cache and retraction; the KV pool stays consistent."""

import pytest

from sgltest.runtime_helpers import PROMPTS, assert_same_results, run_all, run_with_retraction, run_workload, submit


@pytest.mark.parametrize(
    "flags",
    [{}, {"disable_overlap_schedule": True}, {"chunked_prefill_size": 12}, {"disable_radix_cache": True}],
    ids=["overlap", "plain", "chunked", "no-radix"],
)
def test_mixed_equals_separate(make_scheduler, tokenizer, flags):
    separate = make_scheduler(**flags)
    mixed = make_scheduler(enable_mixed_chunk=True, **flags)
    a = run_workload(separate, tokenizer, abort_after=3)
    b = run_workload(mixed, tokenizer, abort_after=3)
    assert_same_results(a, b)
    assert separate.num_mixed_steps == 0
    assert mixed.num_mixed_steps > 0, "no prefill ever ran beside a decode step"
    mixed.check_integrity()


def test_mixed_chunks_of_a_long_prompt_ride_with_decode(make_scheduler, tokenizer):
    """A long prompt prefilled in chunks while others decode: every chunk after the first shares
    its forward with the decode step, and the decoding requests get a token per chunk."""
    ids = [tokenizer.encode(p) for p in PROMPTS]
    long_prompt = sum(ids, [])
    runs = []
    for mix in (False, True):
        sched = make_scheduler(enable_mixed_chunk=mix, chunked_prefill_size=16)
        for i in range(3):
            submit(sched, tokenizer, f"d{i}", ids[i], max_new_tokens=30, temperature=0, ignore_eos=True)
        for _ in range(3):
            sched.step()
        submit(sched, tokenizer, "long", long_prompt, max_new_tokens=8, temperature=0, ignore_eos=True)
        runs.append(run_all(sched))
        if mix:
            chunks = -(-len(long_prompt) // 8)  # at least half of each 16-token chunk goes to the prompt
            assert sched.num_mixed_steps >= min(chunks, 20) // 2
    for rid in runs[0]:
        assert runs[0][rid]["ids"] == runs[1][rid]["ids"], rid


def test_mixed_with_retraction(make_scheduler, tokenizer):
    separate = run_with_retraction(make_scheduler, tokenizer)
    mixed = run_with_retraction(make_scheduler, tokenizer, enable_mixed_chunk=True)
    assert {rid: r["ids"] for rid, r in separate.items()} == {rid: r["ids"] for rid, r in mixed.items()}
