"""The one table of sampling parameters (`sgl.runtime.sampling.params.PARAMS`) against every other
place that lists them: the request models, the OpenAI-to-runtime mapping, the frontend's
SglSamplingParams and its validation, and the written signatures of gen, gen_int, gen_string,
run and run_batch. A parameter added, renamed or re-defaulted in one place only fails here."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import sgl
from sgl.runtime.sampling.params import (
    EXTRA,
    GRAMMAR_FIELDS,
    OPENAI,
    PARAMS,
    RUN,
    SamplingParams,
    frontend_params,
    openai_params,
)
from sgl.runtime.server import openai_common
from sgl.runtime.server.protocol import (
    CHAT_TEMPERATURE,
    COMPLETION_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIRequest,
    SamplingParamsInput,
)
from sgl.sampling import LOGPROB_FIELDS, SglSamplingParams, validate

# A valid value other than the default, per parameter (a new parameter must get one here).
NON_DEFAULTS = {
    "max_new_tokens": 7, "min_new_tokens": 2, "stop": ["\n\n"], "stop_token_ids": [5], "temperature": 0.5,
    "top_p": 0.9, "top_k": 3, "min_p": 0.1, "frequency_penalty": 0.5, "presence_penalty": -0.5,
    "repetition_penalty": 1.2, "ignore_eos": True, "skip_special_tokens": False,
    "spaces_between_special_tokens": False, "no_stop_trim": True, "n": 2, "json_schema": '{"type": "object"}',
    "regex": "[a-z]+", "ebnf": 'root ::= "a"', "custom_params": {"k": 1}, "seed": 11,
    "structural_tag": '{"structures": [{"begin": "<a>", "schema": {}, "end": "</a>"}], "triggers": ["<a>"]}',
}
# An out-of-range (or wrongly typed) value per parameter with a rule or a type.
BAD_VALUES = {
    "max_new_tokens": -1, "min_new_tokens": -1, "stop": 5, "stop_token_ids": ["a"], "temperature": -0.1,
    "top_p": 0.0, "top_k": 0, "min_p": 1.5, "frequency_penalty": 2.5, "presence_penalty": -3.0,
    "repetition_penalty": 2.5, "ignore_eos": "yes", "n": 0, "regex": 5, "json_schema": 42, "seed": "x",
}
# The OpenAI fields that are not sampling parameters.
OPENAI_ONLY = {"model", "logit_bias", "stream", "stream_options", "user", "lora_path", "session_params"}
COMPLETION_ONLY = {"prompt", "best_of", "echo", "logprobs", "response_format", "suffix"}
CHAT_ONLY = {"parallel_tool_calls", "messages", "logprobs", "top_logprobs", "max_completion_tokens", "response_format", "tools",
             "tool_choice"}
# gen's arguments that are not in the table.
GEN_OWN = {"name", "dtype", "choices", "choices_method", "tools", "tool_choice", "tool_parser", *LOGPROB_FIELDS}


def one_grammar(values: dict, keep: str) -> dict:
    """`values` with every grammar but `keep` unset (they are mutually exclusive)."""
    return {k: (None if k in GRAMMAR_FIELDS and k != keep else v) for k, v in values.items()}


def test_every_parameter_has_a_test_value():
    assert set(NON_DEFAULTS) == set(PARAMS)
    ranged = {name for name, spec in PARAMS.items() if spec.valid is not None}
    assert ranged <= set(BAD_VALUES)


def test_table_defaults_are_the_dataclass_defaults_and_valid():
    params = SamplingParams()
    for name, spec in PARAMS.items():
        assert getattr(params, name) == spec.default
    params.verify()
    for grammar in GRAMMAR_FIELDS:
        SamplingParams(**one_grammar(NON_DEFAULTS, grammar)).verify()


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_runtime_and_frontend_reject_the_same_values(name):
    with pytest.raises(ValueError, match=name):
        SamplingParams.from_dict({name: BAD_VALUES[name]}).verify()
    spec = PARAMS[name]
    if spec.frontend is None:
        return
    with pytest.raises(ValueError, match=spec.public_name):
        validate(SglSamplingParams(**{name: BAD_VALUES[name]}), {name: spec.public_name})


def test_generate_model_is_the_table():
    fields = SamplingParamsInput.model_fields
    assert list(fields) == list(PARAMS)
    assert {name: f.default for name, f in fields.items()} == {name: s.default for name, s in PARAMS.items()}


@pytest.mark.parametrize("model, own, exclude", [
    (CompletionRequest, COMPLETION_ONLY, set()),
    (ChatCompletionRequest, CHAT_ONLY, {"json_schema"}),
])
def test_openai_models_are_the_table(model, own, exclude):
    expected = {spec.public_name: spec for spec in openai_params() if spec.name not in exclude}
    sampling = set(model.model_fields) - OPENAI_ONLY - own
    assert sampling == set(expected)
    route_defaults = {"max_tokens": COMPLETION_MAX_TOKENS if model is CompletionRequest else None,
                      "temperature": 1.0 if model is CompletionRequest else CHAT_TEMPERATURE}
    for public, spec in expected.items():
        assert model.model_fields[public].default == route_defaults.get(public, spec.default), public
    assert set(OpenAIRequest.model_fields) == OPENAI_ONLY
    assert {spec.openai for spec in openai_params()} == {OPENAI, EXTRA}


def test_openai_mapping_sends_every_parameter_under_its_runtime_name():
    chosen = one_grammar(NON_DEFAULTS, "regex")
    values = {spec.public_name: chosen[spec.name] for spec in openai_params()}
    req = CompletionRequest(model="m", prompt="p", **values)
    sp = openai_common.sampling_params(req, values["temperature"], values["max_tokens"], ["<end>"])
    expected = {spec.name: values[spec.public_name] for spec in openai_params()
                if values[spec.public_name] is not None}
    assert sp == {**expected, "stop": values["stop"] + ["<end>"]}
    SamplingParams.from_dict(sp).verify()


def test_gen_signature_is_the_table():
    params = inspect.signature(sgl.gen).parameters
    sampling = set(params) - GEN_OWN
    assert sampling == {spec.public_name for spec in frontend_params()}
    assert all(p.default is None for p in params.values())
    for typed in (sgl.gen_int, sgl.gen_string):
        typed_params = list(inspect.signature(typed).parameters)
        assert typed_params == [p for p in params if p in typed_params]  # gen's order
        assert {spec.public_name for spec in frontend_params() if spec.frontend == RUN} <= set(typed_params)


@pytest.mark.parametrize("method", ["run", "run_batch"])
def test_run_signature_is_the_table(method):
    params = inspect.signature(getattr(sgl.function(lambda s: None), method)).parameters
    run_specs = [spec for spec in frontend_params() if spec.frontend == RUN]
    for spec in run_specs:
        assert params[spec.name].default == spec.default, spec.name
    for name in LOGPROB_FIELDS:
        assert params[name].default is None
    gen_only = {spec.name for spec in frontend_params() if spec.frontend != RUN}
    assert not gen_only & set(params)


def test_frontend_params_are_the_table():
    fields = {f.name: f.default for f in dataclasses.fields(SglSamplingParams)}
    table = {spec.name: spec.default for spec in frontend_params()}
    assert fields == {**table, **dict.fromkeys(LOGPROB_FIELDS), "dtype": None}
    values = SglSamplingParams(**{name: NON_DEFAULTS[name] for name in table})
    srt = values.to_srt_kwargs()
    assert srt == {name: NON_DEFAULTS[name] for name in table}
    assert values.to_openai_kwargs() == {spec.public_name: NON_DEFAULTS[spec.name]
                                         for spec in frontend_params() if spec.openai == OPENAI}


def test_gen_reaches_the_runtime_names():
    values = one_grammar(NON_DEFAULTS, "json_schema")
    args = {spec.public_name: values[spec.name] for spec in frontend_params()}
    node = sgl.gen("x", **args)
    srt = node.sampling_params.to_srt_kwargs()
    # structural_tag (unset here) is sgl's extension: left out of the body unless used
    assert srt == {spec.name: args[spec.public_name] for spec in frontend_params() if spec.name != "structural_tag"}
    SamplingParams.from_dict(srt).verify()


def test_run_batch_refuses_unknown_keywords():
    with pytest.raises(ValueError, match="tempreature"):
        sgl.function(lambda s: None).run_batch([{}], tempreature=0.5)
