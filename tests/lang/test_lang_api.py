"""The public surface: names, argument names and defaults, validation, lazy imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from sgltest.fake_engine import FakeEngine

import sgl
from sgl.ir import SglExprList, SglGen, SglRoleBegin, SglRoleEnd, SglSelect

GEN_ARGS = [
    "name", "max_tokens", "min_tokens", "stop", "stop_token_ids", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "ignore_eos", "return_logprob", "logprob_start_len",
    "top_logprobs_num", "return_text_in_logprobs", "dtype", "choices", "choices_method", "regex", "json_schema",
]
# sgl's additions after SGLang's arguments: structural tags and function calling
GEN_EXTRA_ARGS = ["structural_tag", "tools", "tool_choice", "tool_parser"]


def test_import_does_not_load_torch():
    code = ("import sys, sgl; sgl.Runtime, sgl.RuntimeEndpoint, sgl.OpenAI, sgl.EngineBackend; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_public_names():
    for name in ["function", "gen", "gen_int", "gen_string", "select", "image", "video", "system", "user",
                 "assistant", "system_begin", "system_end", "user_begin", "user_end", "assistant_begin",
                 "assistant_end", "set_default_backend", "flush_cache", "get_server_info", "Runtime",
                 "RuntimeEndpoint", "OpenAI", "Engine", "token_length_normalized", "greedy_token_selection",
                 "unconditional_likelihood_normalized", "global_config", "__version__"]:
        assert name in dir(sgl), name
    assert inspect.isclass(sgl.RuntimeEndpoint) and inspect.isclass(sgl.Runtime) and inspect.isclass(sgl.OpenAI)
    with pytest.raises(AttributeError):
        sgl.no_such_name


def test_gen_signature_matches_sglang():
    params = inspect.signature(sgl.gen).parameters
    assert list(params) == GEN_ARGS + GEN_EXTRA_ARGS
    assert all(p.default is None for p in params.values())
    assert list(inspect.signature(sgl.select).parameters) == ["name", "choices", "temperature", "choices_method"]
    assert inspect.signature(sgl.select).parameters["choices_method"].default is sgl.token_length_normalized
    int_args = [a for a in GEN_ARGS if a not in ("min_tokens", "dtype", "choices", "choices_method", "regex",
                                                 "json_schema")]
    assert list(inspect.signature(sgl.gen_int).parameters) == int_args
    assert list(inspect.signature(sgl.gen_string).parameters) == int_args


def test_run_signature_defaults():
    def body(s):
        pass

    run = inspect.signature(sgl.function(body).run).parameters
    expected = {"max_new_tokens": 128, "stop": None, "stop_token_ids": None, "temperature": 1.0, "top_p": 1.0,
                "top_k": -1, "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "ignore_eos": False,
                "return_logprob": None, "logprob_start_len": None, "top_logprobs_num": None,
                "return_text_in_logprobs": None, "stream": False, "backend": None, "use_thread": True}
    assert {k: run[k].default for k in expected} == expected
    batch = inspect.signature(sgl.function(body).run_batch).parameters
    assert batch["num_threads"].default == "auto" and batch["progress_bar"].default is False
    assert batch["generator_style"].default is False
    assert batch["max_new_tokens"].kind is inspect.Parameter.KEYWORD_ONLY


def test_gen_second_positional_is_max_tokens():
    node = sgl.gen("x", 16)
    assert isinstance(node, SglGen) and node.sampling_params.max_new_tokens == 16
    assert node.sampling_params.temperature is None  # unset: inherits the run() default


def test_gen_with_choices_is_select():
    node = sgl.gen("x", choices=["a", "b"])
    assert isinstance(node, SglSelect) and node.temperature == 0.0
    assert node.choices_method is sgl.token_length_normalized
    node = sgl.gen("x", choices=["a"], choices_method=sgl.greedy_token_selection)
    assert node.choices_method is sgl.greedy_token_selection


@pytest.mark.parametrize("kwargs,param", [
    ({"max_tokens": -1}, "max_tokens"),
    ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"min_p": 2.0}, "min_p"),
    ({"frequency_penalty": 3.0}, "frequency_penalty"),
    ({"stop": 5}, "stop"),
    ({"stop_token_ids": ["a"]}, "stop_token_ids"),
    ({"dtype": complex}, "dtype"),
    ({"regex": "("}, "regex"),
    ({"json_schema": "{not json"}, "json_schema"),
    ({"json_schema": 42}, "json_schema"),
    ({"regex": "a", "json_schema": "{}"}, "json_schema"),
    ({"name": 3}, "name"),
])
def test_gen_rejects_bad_arguments(kwargs, param):
    with pytest.raises(ValueError, match=param):
        sgl.gen(**kwargs)


def test_gen_accepts_schema_dict():
    node = sgl.gen("x", json_schema={"type": "object"})
    assert node.sampling_params.json_schema == '{"type": "object"}'


@pytest.mark.parametrize("kwargs,param", [
    ({"choices": None}, "choices"),
    ({"choices": []}, "choices"),
    ({"choices": ["a", 1]}, "choices"),
    ({"choices": ["a"], "choices_method": "greedy"}, "choices_method"),
    ({"choices": ["a"], "temperature": -1}, "temperature"),
])
def test_select_rejects_bad_arguments(kwargs, param):
    with pytest.raises(ValueError, match=param):
        sgl.select("x", **kwargs)


def test_role_builders():
    expr = sgl.user("hi")
    assert isinstance(expr, SglExprList)
    begin, body, end = expr.expr_list
    assert isinstance(begin, SglRoleBegin) and begin.role == "user" and body.value == "hi"
    assert isinstance(end, SglRoleEnd) and end.role == "user"
    assert [type(e) for e in sgl.assistant().expr_list] == [SglRoleBegin, SglRoleEnd]
    assert sgl.system_begin().role == "system" and isinstance(sgl.assistant_end(), SglRoleEnd)


def test_expression_concatenation():
    expr = "a" + sgl.gen("x") + "b"
    assert [type(e).__name__ for e in expr.expr_list] == ["SglConstantText", "SglGen", "SglConstantText"]
    with pytest.raises(ValueError, match="str or an sgl expression"):
        sgl.gen("x") + 3


def test_function_decorator_forms():
    @sgl.function
    def plain(s, a, b=2):
        pass

    @sgl.function(num_api_spec_tokens=8)
    def spec(s):
        pass

    assert plain.arg_names == ["a", "b"] and spec.num_api_spec_tokens == 8
    with pytest.raises(ValueError, match='"s"'):
        sgl.function(lambda x: None)
    with pytest.raises(ValueError, match="num_api_spec_tokens"):
        sgl.function(num_api_spec_tokens=0)(lambda s: None)


def test_bind_merges_and_validates():
    @sgl.function
    def greet(s, who, punctuation):
        s += "Hello " + who + punctuation

    bound = greet.bind(who="Ann")
    assert bound.bind_arguments == {"who": "Ann"}
    state = bound.run(punctuation="!", backend=sgl.EngineBackend(FakeEngine()))
    assert state.text() == "Hello Ann!"
    with pytest.raises(ValueError, match="nobody"):
        greet.bind(nobody=1)


def test_run_validates_sampling_defaults():
    @sgl.function
    def noop(s):
        s += "x"

    with pytest.raises(ValueError, match="temperature"):
        noop.run(temperature=-1, backend=sgl.EngineBackend(FakeEngine()))
    with pytest.raises(ValueError, match="max_new_tokens"):
        noop.run(max_new_tokens=-5, backend=sgl.EngineBackend(FakeEngine()))


def test_run_without_backend_is_a_clear_error():
    previous = sgl.global_config.default_backend
    sgl.global_config.default_backend = None
    try:
        with pytest.raises(ValueError, match="backend"):
            sgl.function(lambda s: None).run()
        assert sgl.flush_cache() is False and sgl.get_server_info() is None
    finally:
        sgl.global_config.default_backend = previous


def test_set_default_backend_wraps_engines(fake_backend):
    engine = FakeEngine()
    sgl.set_default_backend(engine)
    assert isinstance(sgl.global_config.default_backend, sgl.EngineBackend)
    assert sgl.global_config.default_backend.engine is engine
    with pytest.raises(ValueError, match="backend"):
        sgl.set_default_backend(object())


def test_flush_cache_and_server_info_use_the_backend(fake_backend):
    engine = fake_backend.engine
    engine.cache.insert([1, 2, 3])
    sgl.flush_cache()
    assert engine.cache.match([1, 2, 3]) == 0
    assert sgl.get_server_info()["version"] == "fake"


def test_run_batch_argument_forms(fake_backend):
    @sgl.function
    def echo(s, a, b="B"):
        s += a + b

    assert [st.text() for st in echo.run_batch([("x",), ("y", "z")])] == ["xB", "yz"]
    with pytest.raises(ValueError, match="mismatch"):
        echo.run_batch([("x", "y", "z")])
    with pytest.raises(ValueError, match="batch_kwargs"):
        echo.run_batch({"a": "x"})
    with pytest.raises(ValueError, match="num_threads"):
        echo.run_batch([{"a": "x"}], num_threads=0)


def test_video_frame_sampling_and_missing_opencv(tmp_path):
    from sgl.utils import encode_video_base64, sample_frame_indices

    assert sample_frame_indices(100, 4) == [0, 25, 50, 75]
    assert sample_frame_indices(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, 0)
    with pytest.raises(ValueError, match="num_frames"):
        sgl.video("clip.mp4", 0)
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        with pytest.raises(ImportError, match="opencv-python"):
            encode_video_base64(str(tmp_path / "clip.mp4"), 4)
