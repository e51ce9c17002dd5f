"""select on the SRT backends: one prefix-caching call, one batched logprob call, token healing."""

from __future__ import annotations

import pytest
from sgltest.fake_engine import FakeEngine, fake_logprob

import sgl
from sgl.backend.srt import choice_token_logprobs, mean_logprob


def _run_select(engine, prompt, choices, method=sgl.token_length_normalized):
    @sgl.function
    def pick(s):
        s += prompt
        s += sgl.select("answer", choices, choices_method=method)

    state = pick.run(backend=sgl.EngineBackend(engine))
    assert state.error() is None
    return state


def test_one_prefix_call_then_one_batched_logprob_call():
    engine = FakeEngine()
    prompt = "Is the sky blue? Answer:"
    state = _run_select(engine, prompt, [" Yes", " No", " Maybe"])
    assert len(engine.requests) == 2
    prefix, batch = engine.requests
    assert prefix["prompt"] == prompt and prefix["sampling_params"] == {"max_new_tokens": 0}
    assert batch["prompt"] == [prompt + c for c in (" Yes", " No", " Maybe")]
    assert batch["sampling_params"] == {"max_new_tokens": 0, "temperature": 0}
    prompt_len = len(engine.tokenizer.encode(prompt))
    assert batch["logprob_start_len"] == prompt_len - 2
    assert batch["return_logprob"] and batch["return_text_in_logprobs"]
    assert state["answer"] in (" Yes", " No", " Maybe")
    assert state.text() == prompt + state["answer"]


def test_scores_are_means_over_the_choice_tokens():
    engine = FakeEngine()
    prompt = "The color is"
    choices = [" deep blue", " red"]
    meta = _run_select(engine, prompt, choices).get_meta_info("answer")
    for choice, entries, mean in zip(choices, meta["input_token_logprobs"], meta["normalized_prompt_logprobs"]):
        ids = engine.tokenizer.encode(prompt + choice)
        choice_ids = ids[len(engine.tokenizer.encode(prompt)):]
        assert [e[1] for e in entries] == choice_ids  # no merge here: only the choice's tokens
        expected = [fake_logprob(ids[i - 1], ids[i]) for i in range(len(ids) - len(choice_ids), len(ids))]
        assert mean == pytest.approx(sum(expected) / len(expected))


def test_token_healing_keeps_the_merged_boundary_token():
    # "organ" + "ism" tokenizes as one token "organism": its logprob belongs to the choice.
    engine = FakeEngine()
    meta = _run_select(engine, "An organ", ["ism", " donor"]).get_meta_info("answer")
    merged, separate = meta["input_token_logprobs"]
    assert [e[2] for e in merged] == [" organism"]
    assert [e[2] for e in separate] == [" donor"]


def test_unconditional_method_sends_choice_tokens_alone():
    engine = FakeEngine()
    _run_select(engine, "Pick:", [" a b", " c"], sgl.unconditional_likelihood_normalized)
    assert len(engine.requests) == 3
    third = engine.requests[2]
    assert third["input_ids"] == [engine.tokenizer.encode(" a b"), engine.tokenizer.encode(" c")]
    assert third["logprob_start_len"] == 0 and third["return_logprob"]


def test_select_rejects_sampling_temperature():
    @sgl.function
    def pick(s):
        s += "x" + sgl.select("v", ["a", "b"], temperature=0.5)

    state = pick.run(backend=sgl.EngineBackend(FakeEngine()))
    assert isinstance(state.error(), ValueError) and "temperature" in str(state.error())


def _meta(entries, prompt_tokens):
    return {"input_token_logprobs": entries, "prompt_tokens": prompt_tokens}


def test_choice_tokens_v04_layout_without_merge():
    # Prompt "A B" (2 tokens: "A", " B"), choice " C": full 3 tokens, start = 0.
    # v0.4 layout for start=0: [None, A], [lp, B], [lp, C].
    entries = [[None, 1, "A"], [-0.5, 2, " B"], [-0.7, 3, " C"]]
    assert choice_token_logprobs(_meta(entries, 3), "A B", 2, 0) == [[-0.7, 3, " C"]]


def test_choice_tokens_padded_layout():
    # Later SGLang: entries start at `start` with a None pad. Prompt of 5 tokens, start = 3.
    entries = [[None, 4, " d"], [-0.2, 5, " e"], [-0.9, 6, " F"], [-0.3, 7, " G"]]
    assert choice_token_logprobs(_meta(entries, 7), "a b c d e", 5, 3) == [[-0.9, 6, " F"], [-0.3, 7, " G"]]


def test_choice_tokens_merged_boundary():
    # Prompt "x organ" (2 tokens), choice "ism": full text "x organism" is 2 tokens; start = 0.
    entries = [[None, 1, "x"], [-1.5, 9, " organism"]]
    assert choice_token_logprobs(_meta(entries, 2), "x organ", 2, 0) == [[-1.5, 9, " organism"]]


def test_mean_ignores_missing_logprobs():
    assert mean_logprob([[None, 1, "a"], [-1.0, 2, "b"], [-3.0, 3, "c"]]) == -2.0
