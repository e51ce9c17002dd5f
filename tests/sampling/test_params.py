"""SamplingParams: defaults, type checks, SGLang's ranges and messages, normalize, round trips."""

import pickle

import pytest

from sgl.runtime.sampling.params import TOP_K_ALL, SamplingParams, choice_seed


def test_defaults_match_sglang():
    p = SamplingParams()
    assert (p.max_new_tokens, p.min_new_tokens, p.stop, p.stop_token_ids) == (128, 0, None, None)
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (1.0, 1.0, -1, 0.0)
    assert (p.frequency_penalty, p.presence_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert (p.ignore_eos, p.skip_special_tokens, p.spaces_between_special_tokens, p.no_stop_trim) == (
        False,
        True,
        True,
        False,
    )
    assert (p.n, p.json_schema, p.regex, p.ebnf, p.custom_params, p.seed) == (1, None, None, None, None, None)
    p.verify()


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -0.1}, "temperature"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"min_new_tokens": 5, "max_new_tokens": 4}, "min_new_tokens"),
        ({"min_new_tokens": -1}, "min_new_tokens"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"repetition_penalty": 2.1}, "repetition_penalty"),
        ({"regex": "a+", "json_schema": "{}"}, "regex"),
        ({"regex": "a+", "ebnf": "root ::= 'a'"}, "regex"),
        ({"n": 0}, "n"),
    ],
)
def test_verify_rejects_out_of_range(kwargs, param):
    with pytest.raises(ValueError, match=param):
        SamplingParams.from_dict(kwargs).verify()


def test_grammar_message_is_sglangs():
    with pytest.raises(ValueError, match=r"^Only one of regex, json_schema, or ebnf can be set\.$"):
        SamplingParams(regex="a", json_schema="{}").verify()


def test_stop_token_ids_checked_against_vocab():
    SamplingParams(stop_token_ids=[5]).verify(vocab_size=10)
    with pytest.raises(ValueError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[10]).verify(vocab_size=10)
    with pytest.raises(ValueError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[-1]).verify()


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams.from_dict({"max_tokens": 5})


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"max_new_tokens": "16"}, "max_new_tokens"),
        ({"top_k": True}, "top_k"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
        ({"stop": [1, 2]}, "stop"),
        ({"stop_token_ids": "5"}, "stop_token_ids"),
        ({"stop_token_ids": [1.5]}, "stop_token_ids"),
        ({"regex": 5}, "regex"),
        ({"custom_params": [1]}, "custom_params"),
        ({"seed": "x"}, "seed"),
        ({"top_p": float("nan")}, "top_p"),
    ],
)
def test_wrong_types_name_the_parameter(kwargs, param):
    with pytest.raises(ValueError, match=param):
        SamplingParams.from_dict(kwargs)


def test_json_numbers_are_coerced():
    p = SamplingParams.from_dict({"temperature": 0, "max_new_tokens": 16.0, "top_p": 1})
    assert isinstance(p.temperature, float) and p.max_new_tokens == 16 and isinstance(p.max_new_tokens, int)
    assert SamplingParams.from_dict(None) == SamplingParams()
    with pytest.raises(ValueError, match="sampling_params"):
        SamplingParams.from_dict([("temperature", 1.0)])


def test_max_new_tokens_none_means_unbounded():
    p = SamplingParams(max_new_tokens=None, min_new_tokens=3)
    p.verify()


def test_normalize_stop_and_greedy(tokenizer):
    p = SamplingParams(stop="\n\nUser:", temperature=0.0, stop_token_ids=[2, 2, 0])
    p.normalize(tokenizer)
    assert p.stop == ["\n\nUser:"] and p.stop_strs == ["\n\nUser:"]
    assert p.stop_str_max_len == len(tokenizer.encode("\n\nUser:", add_special_tokens=False))
    assert p.stop_str_max_len >= 2  # a multi-token stop string: measured in tokens, not chars
    assert (p.temperature, p.top_k) == (1.0, 1) and p.is_greedy
    assert p.stop_token_ids == {0, 2}
    p.verify(vocab_size=len(tokenizer))


def test_normalize_top_k_and_idempotence():
    p = SamplingParams(stop=["ab", "abcd"], temperature=0.7)
    p.normalize(None)
    assert p.stop_str_max_len == 4  # no tokenizer: characters
    assert p.top_k == TOP_K_ALL and p.temperature == 0.7 and not p.is_greedy
    snapshot = p.to_dict()
    p.normalize(None)
    assert p.to_dict() == snapshot
    empty = SamplingParams()
    empty.normalize(None)
    assert empty.stop == [] and empty.stop_str_max_len == 0 and empty.stop_token_ids == set()


def test_effective_values_without_normalize():
    assert SamplingParams(temperature=0).effective_temperature() == 1.0
    assert SamplingParams(temperature=0, top_k=50).effective_top_k() == 1
    assert SamplingParams(temperature=0.5).effective_top_k() == TOP_K_ALL
    assert SamplingParams(temperature=0.5, top_k=7).effective_top_k() == 7


def test_to_dict_round_trip_and_pickle(tokenizer):
    p = SamplingParams(stop=["x"], stop_token_ids=[3, 1], seed=7, json_schema={"type": "string"})
    assert p.json_schema == '{"type": "string"}'
    assert SamplingParams.from_dict(p.to_dict()) == p
    p.normalize(tokenizer)
    again = SamplingParams.from_dict(p.to_dict())
    assert again.stop_token_ids == [1, 3] and again.top_k == p.top_k and again.stop == ["x"]
    clone = pickle.loads(pickle.dumps(p))
    assert clone == p and clone.stop_str_max_len == p.stop_str_max_len


@pytest.mark.parametrize("seed", [0, 7, -3, 2**63 - 1, 2**70])
def test_choice_seeds_are_distinct_and_keep_the_first(seed):
    seeds = [choice_seed(seed, j) for j in range(64)]
    assert seeds[0] == seed and len(set(seeds)) == 64
    assert seeds == [choice_seed(seed, j) for j in range(64)]
    SamplingParams(seed=seeds[-1]).verify()
