"""Greedy decoding through the scheduler equals HF transformers on the default model (the oracle),
as one batch, with the radix cache on and off and with chunked prefill; cached_tokens accounting;
retraction under a small KV pool."""

import pytest

from sgltest.hf_oracle import assert_matches_reference, hf_greedy, load_hf_gguf_model
from sgltest.runtime_helpers import NEW_TOKENS, PROMPTS, run_all, submit


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    ids = [tokenizer.encode(p) for p in PROMPTS]
    assert len({len(x) for x in ids}) >= 6, "prompts should have different lengths"
    return ids


@pytest.fixture(scope="module")
def reference(default_gguf, prompt_ids):
    model = load_hf_gguf_model(default_gguf)
    return [hf_greedy(model, ids, NEW_TOKENS) for ids in prompt_ids]


def _greedy_batch(sched, tokenizer, prompt_ids, tag="", ignore_eos=True):
    # Without ignore_eos, min_new_tokens still makes every request decode NEW_TOKENS tokens.
    extra = {} if ignore_eos else {"min_new_tokens": NEW_TOKENS}
    for i, ids in enumerate(prompt_ids):
        submit(sched, tokenizer, f"{tag}{i}", ids, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=ignore_eos,
               **extra)
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
    # Requests that may stop at EOS are admitted on an estimate of their length, which a small pool
    # turns into retractions (these ones cannot stop before NEW_TOKENS, so the estimate is short).
    big = _greedy_batch(make_scheduler(), tokenizer, prompt_ids, ignore_eos=False)
    total = sum(len(x) for x in prompt_ids)
    small = make_scheduler(max_total_tokens=total + 150, disable_radix_cache=True)
    got = _greedy_batch(small, tokenizer, prompt_ids, ignore_eos=False)
    assert small.num_retractions > 0, "the small pool should force retraction"
    for i in range(len(prompt_ids)):
        assert got[str(i)]["ids"] == big[str(i)]["ids"], f"prompt {i} differs after retraction"
    small.check_integrity()


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_running_prompt_is_shared(make_scheduler, tokenizer, overlap):
    """A prompt enters the prefix cache when it is prefilled, not when its request finishes: a
    request sharing it hits the cache while the first one is still decoding."""
    sched = make_scheduler(disable_overlap_schedule=not overlap)
    system = list(range(1000, 1200))
    submit(sched, tokenizer, "first", system + [5, 6, 7], max_new_tokens=40, temperature=0, ignore_eos=True)
    for _ in range(3):
        sched.step()
        sched.check_integrity()
    assert any(r.rid == "first" for r in sched.running), "the first request should be decoding"
    submit(sched, tokenizer, "second", system + [8, 9], max_new_tokens=4, temperature=0, ignore_eos=True)
    results = run_all(sched)
    assert results["second"]["out"].cached_tokens == len(system)
    assert "first" in results


def test_running_batch_groups_shared_prefixes(make_scheduler, tokenizer):
    """Requests sharing a prompt prefix sit side by side in the decode batch (their KV slots are
    shared, so the decode kernel reads them together), whatever order they arrived in."""
    sched = make_scheduler(disable_overlap_schedule=True)
    a, b = list(range(2000, 2080)), list(range(1000, 1080))
    for i in range(3):
        submit(sched, tokenizer, f"a{i}", a + [10 + i], max_new_tokens=8, temperature=0, ignore_eos=True)
        submit(sched, tokenizer, f"b{i}", b + [10 + i], max_new_tokens=8, temperature=0, ignore_eos=True)
    while len(sched.running) < 6:
        sched.step()
    groups = [r.rid[0] for r in sched.running]
    assert groups in (list("bbbaaa"), list("aaabbb")), groups
    run_all(sched)


@pytest.mark.parametrize("queue", [6, 140], ids=["short-queue", "long-queue"])
def test_shared_prefix_computed_once(make_scheduler, tokenizer, queue):
    """Requests arriving together with a common uncached prefix: one computes it, the others wait
    a round and find it cached (lpm; on long queues too, where matching falls back to fcfs)."""
    sched = make_scheduler(max_running_requests=256)
    prefixes = [list(range(1000 + 300 * g, 1000 + 300 * g + 200)) for g in range(2)]
    for i in range(queue):
        submit(sched, tokenizer, f"r{i}", prefixes[i % 2] + [7, i % 50 + 10], max_new_tokens=2, temperature=0,
               ignore_eos=True)
    results = run_all(sched)
    cached = sorted(r["out"].cached_tokens for r in results.values())
    assert cached[:2] == [0, 0] and all(c >= 200 for c in cached[2:]), cached[:6]


def test_ignore_eos_requests_are_not_over_admitted(make_scheduler, tokenizer, prompt_ids):
    """Requests with ignore_eos will decode all their tokens: admission reserves them in full, so a
    small pool queues requests instead of admitting them and retracting later."""
    total = sum(len(x) for x in prompt_ids)
    small = make_scheduler(max_total_tokens=total + 150, disable_radix_cache=True)
    got = _greedy_batch(small, tokenizer, prompt_ids)
    assert small.num_retractions == 0
    assert all(len(r["ids"]) == NEW_TOKENS for r in got.values())


@pytest.mark.parametrize("radix", [False, True], ids=["no-radix", "radix"])
def test_ignore_eos_admission_counts_memory_freed_by_earlier_finishes(make_scheduler, tokenizer, radix):
    """Two short requests free their KV long before the long one peaks, so all three fit a pool
    smaller than the sum of what they will ever hold (20 + 4, 20 + 60, 20 + 4 = 128 > 100), and
    still no request is retracted."""
    sched = make_scheduler(max_total_tokens=100, disable_radix_cache=not radix, disable_overlap_schedule=True)
    for name, start, new in (("a", 100, 4), ("b", 200, 60), ("c", 300, 4)):
        submit(sched, tokenizer, name, list(range(start, start + 20)), max_new_tokens=new, temperature=0,
               ignore_eos=True)
    sched.step()
    assert sorted(r.rid for r in sched.running) == ["a", "b", "c"]
    results = run_all(sched)
    assert sched.num_retractions == 0
    assert [len(results[k]["ids"]) for k in "abc"] == [4, 60, 4]
    sched.check_integrity()


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_decode_is_not_starved_by_consecutive_prefills(make_scheduler, tokenizer, overlap):
    """While a request decodes, every prefill batch (here the chunks of a long prompt, then a
    second prompt) is followed by a decode step: the running request gains a token at least every
    second step."""
    sched = make_scheduler(chunked_prefill_size=16, disable_overlap_schedule=not overlap)
    submit(sched, tokenizer, "r", list(range(100, 120)), max_new_tokens=30, temperature=0, ignore_eos=True)
    while not any(r.rid == "r" and r.output_ids for r in sched.running):
        sched.step()
    submit(sched, tokenizer, "long", list(range(200, 264)), max_new_tokens=2, temperature=0, ignore_eos=True)
    submit(sched, tokenizer, "short", list(range(300, 310)), max_new_tokens=2, temperature=0, ignore_eos=True)
    r = next(q for q in sched.running if q.rid == "r")
    counts = [len(r.output_ids)]
    while not r.finished() and len(counts) < 12:
        sched.step()
        counts.append(len(r.output_ids))
    gains = [b - a for a, b in zip(counts, counts[1:])]
    assert 0 in gains, counts  # prefills did run in between
    # the longest run of steps without a new token: one prefill (with overlap a token is seen one
    # step after its decode was launched, so the first prefill's run is one step longer)
    longest = max(len(run) for run in "".join("x" if g == 0 else " " for g in gains).split(" "))
    assert longest <= (2 if overlap else 1), counts
    run_all(sched)
    sched.check_integrity()


def test_input_logprobs_are_computed_in_slices(make_scheduler, tokenizer, monkeypatch):
    """Prompt logprobs are turned from logits a slice of rows at a time (a long prompt's full
    log-softmax could not be held beside a full KV pool); slicing changes no value."""
    import sgl.runtime.scheduler.scheduler as sched_mod

    ids = tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 3)
    got = {}
    for rows in (1024, 5):
        monkeypatch.setattr(sched_mod, "INPUT_LOGPROB_ROWS", rows)
        sched = make_scheduler()
        submit(sched, tokenizer, "r", ids, max_new_tokens=1, temperature=0, return_logprob=True,
               logprob_start_len=0, top_logprobs_num=2)
        req_out = run_all(sched)["r"]["out"]
        got[rows] = (req_out.input_token_logprobs, req_out.input_top_logprobs)
    assert len(got[5][0]) == len(ids) and got[5] == got[1024]
