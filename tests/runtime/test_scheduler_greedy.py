"""Greedy decoding through the scheduler equals HF transformers on the default model (the oracle),
as one batch, with the radix cache on and off and with chunked prefill; cached_tokens accounting;
retraction under a small KV pool."""

import pytest

from hf_oracle import assert_matches_reference, hf_greedy, load_hf_gguf_model
from runtime_helpers import NEW_TOKENS, PROMPTS, run_all, submit


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    ids = [tokenizer.encode(p) for p in PROMPTS]
    assert len({len(x) for x in ids}) >= 6, "prompts should have different lengths"
    return ids


@pytest.fixture(scope="module")
def reference(default_gguf, prompt_ids):
    model = load_hf_gguf_model(default_gguf)
    return [hf_greedy(model, ids, NEW_TOKENS) for ids in prompt_ids]


def _greedy_batch(sched, tokenizer, prompt_ids, tag=""):
    for i, ids in enumerate(prompt_ids):
        submit(sched, tokenizer, f"{tag}{i}", ids, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    return run_all(sched)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"disable_radix_cache": True},
        {"chunked_prefill_size": 12},
        {"chunked_prefill_size": 12, "disable_radix_cache": True, "schedule_policy": "fcfs"},
    ],
    ids=["radix", "no-radix", "chunked", "chunked-no-radix"],
)
def test_greedy_matches_hf(make_scheduler, tokenizer, prompt_ids, reference, flags):
    sched = make_scheduler(**flags)
    if "chunked_prefill_size" in flags:
        assert max(len(x) for x in prompt_ids) >= 3 * flags["chunked_prefill_size"], "need >= 3 chunks"
    results = _greedy_batch(sched, tokenizer, prompt_ids)
    for i, ref in enumerate(reference):
        assert_matches_reference(results[str(i)]["ids"], ref, f"prompt {i} {flags}")
    # The same prompts again hit the cache for all but the last prompt token.
    again = _greedy_batch(sched, tokenizer, prompt_ids, tag="again-")
    for i, ids in enumerate(prompt_ids):
        expected = 0 if flags.get("disable_radix_cache") else len(ids) - 1
        assert again[f"again-{i}"]["out"].cached_tokens == expected
        assert again[f"again-{i}"]["ids"] == results[str(i)]["ids"]
    sched.check_integrity()


def test_cache_tokens_sequence(make_scheduler, tokenizer):
    """SGLang's test_cache_tokens, scaled down: 0 -> 100 -> 999 -> 99 -> 1000 with 1100-token ids."""
    sched = make_scheduler()
    expected = [(100, 0), (1000, 100), (1000, 999), (100, 99), (1100, 1000)]
    for step, (n, cached) in enumerate(expected):
        submit(sched, tokenizer, f"c{step}", list(range(1, n + 1)), max_new_tokens=1, temperature=0)
        out = run_all(sched)[f"c{step}"]["out"]
        assert out.cached_tokens == cached, f"step {step}: {out.cached_tokens} != {cached}"


def test_retraction_gives_same_text(make_scheduler, tokenizer, prompt_ids):
    big = _greedy_batch(make_scheduler(), tokenizer, prompt_ids)
    total = sum(len(x) for x in prompt_ids)
    small = make_scheduler(max_total_tokens=total + 150, disable_radix_cache=True)
    got = _greedy_batch(small, tokenizer, prompt_ids)
    assert small.num_retractions > 0, "the small pool should force retraction"
    for i in range(len(prompt_ids)):
        assert got[str(i)]["ids"] == big[str(i)]["ids"], f"prompt {i} differs after retraction"
    small.check_integrity()
