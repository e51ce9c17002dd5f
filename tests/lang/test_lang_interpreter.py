"""Execution semantics: lazy values, parameter layering, errors, roles, fork/join, streaming."""

from __future__ import annotations

import time

import pytest
from sgltest.fake_engine import FakeEngine
from sgltest.templates import SMOLLM2_TEMPLATE

import sgl
from sgl.ir import SglConstantText, SglExpr


def _gen_requests(engine):
    return [r for r in engine.requests if (r.get("sampling_params") or {}).get("max_new_tokens") != 0]


def test_values_are_lazy():
    engine = FakeEngine(delay=0.3)

    @sgl.function
    def two_gens(s):
        s += "A:" + sgl.gen("a", max_tokens=4)
        s += " B:" + sgl.gen("b", max_tokens=4)

    start = time.monotonic()
    state = two_gens.run(backend=sgl.EngineBackend(engine))
    assert time.monotonic() - start < 0.3  # run() returned before the first gen finished
    assert isinstance(state["b"], str)  # reading blocks until produced
    assert time.monotonic() - start >= 0.6
    assert state.text() == "A:" + state["a"] + " B:" + state["b"]


def test_gen_overrides_layer_on_run_defaults():
    engine = FakeEngine(chat_template=SMOLLM2_TEMPLATE)

    @sgl.function
    def chat(s):
        s += sgl.user("hi")
        s += sgl.assistant(sgl.gen("x", max_tokens=3, stop=["END"], top_k=5))

    chat.run(backend=sgl.EngineBackend(engine), temperature=0.3, max_new_tokens=7, top_p=0.9, stop="STOP").sync()
    params = _gen_requests(engine)[0]["sampling_params"]
    assert params["max_new_tokens"] == 3 and params["top_k"] == 5  # gen values win
    assert params["temperature"] == 0.3 and params["top_p"] == 0.9  # run() defaults otherwise
    assert params["stop"] == ["END", "<|im_end|>"]  # the template's stop string is appended
    assert params["min_new_tokens"] == 0 and params["regex"] is None


def test_run_default_stop_is_kept_when_gen_sets_none():
    engine = FakeEngine()

    @sgl.function
    def one(s):
        s += "x" + sgl.gen("x", max_tokens=3)

    one.run(backend=sgl.EngineBackend(engine), stop=["\n\n"]).sync()
    assert _gen_requests(engine)[0]["sampling_params"]["stop"] == ["\n\n"]


def test_dtype_becomes_regex_and_stops():
    engine = FakeEngine()

    @sgl.function
    def number(s):
        s += "n=" + sgl.gen_int("n") + " b=" + sgl.gen("b", dtype=bool)

    state = number.run(backend=sgl.EngineBackend(engine))
    state.sync()
    int(state["n"])
    first, second = [r["sampling_params"] for r in _gen_requests(engine)]
    assert first["regex"] == sgl.sampling.REGEX_INT and first["stop"] == [" ", "\n"]
    assert second["regex"] == "(True|False)"


def test_logprob_fields_are_sent_only_when_set():
    engine = FakeEngine()

    @sgl.function
    def one(s):
        s += "x" + sgl.gen("a", max_tokens=3) + sgl.gen("b", max_tokens=3, return_logprob=True, top_logprobs_num=2)

    state = one.run(backend=sgl.EngineBackend(engine))
    state.sync()
    first, second = _gen_requests(engine)
    assert not first.get("return_logprob") and "top_logprobs_num" not in first
    assert second["return_logprob"] is True and second["top_logprobs_num"] == 2
    meta = state.get_meta_info("b")
    assert len(meta["output_token_logprobs"]) == meta["completion_tokens"]
    assert all(len(top) == 2 for top in meta["output_top_logprobs"])


def test_backend_error_is_reported_and_nothing_hangs():
    def responder(prompt, params):
        if "boom" in prompt:
            raise RuntimeError("backend exploded")
        return " fine"

    backend = sgl.EngineBackend(FakeEngine(responder=responder))

    @sgl.function
    def failing(s):
        s += "ok:" + sgl.gen("a", max_tokens=2)
        s += " boom" + sgl.gen("b", max_tokens=2)
        s.sync()
        s += " more" + sgl.gen("c", max_tokens=2)  # after the error: dropped, never queued forever

    state = failing.run(backend=backend)
    assert state["a"] == " fine"
    with pytest.raises(RuntimeError, match="backend exploded"):
        state["c"]
    assert "backend exploded" in str(state.error())
    assert state.text().endswith(" boom")
    with pytest.raises(RuntimeError, match="finished"):
        state += "late"


def test_nested_roles_are_an_error(fake_backend):
    @sgl.function
    def nested(s):
        with s.user():
            s += sgl.assistant("x")

    assert "Nested roles" in str(nested.run().error())

    @sgl.function
    def mismatched(s):
        s += sgl.user_begin() + "x" + sgl.assistant_end()

    assert "does not match" in str(mismatched.run().error())


def test_append_rejects_non_expressions(fake_backend):
    @sgl.function
    def bad(s):
        s += 42

    with pytest.raises(ValueError, match="str or an sgl expression"):
        bad.run()

    @sgl.function
    def none(s):
        s += None

    with pytest.raises(ValueError, match="None"):
        none.run()


def test_dispatch_uses_the_nearest_registered_type(fake_backend):
    class Shout(SglConstantText):
        pass

    class Unknown(SglExpr):
        pass

    @sgl.function
    def program(s, node):
        s += node

    assert program.run(node=Shout("HEY")).text() == "HEY"
    assert "cannot execute a Unknown" in str(program.run(node=Unknown()).error())


def test_fork_caches_the_prefix_then_runs_children_concurrently():
    engine = FakeEngine(delay=0.15)

    @sgl.function
    def fan_out(s):
        s += "Shared prefix for every child.\n"
        forks = s.fork(3)
        forks += lambda i: f"Child {i}:" + sgl.gen("out", max_tokens=3)
        forks.join()

    state = fan_out.run(backend=sgl.EngineBackend(engine))
    assert len(state["out"]) == 3
    first = engine.requests[0]
    assert first["prompt"] == "Shared prefix for every child.\n" and first["sampling_params"] == {"max_new_tokens": 0}
    assert engine.max_in_flight >= 2
    assert all(r["prompt"].startswith(first["prompt"]) for r in engine.requests[1:])


def test_fork_group_append_forms(fake_backend):
    @sgl.function
    def forms(s):
        forks = s.fork(2)
        forks += ["a", "b"]
        forks += "-"
        forks += sgl.gen("g", max_tokens=1)
        forks.join()
        s["texts"] = [f.text() for f in forks]

    state = forms.run()
    texts = state["texts"]
    assert [t[:2] for t in texts] == ["a-", "b-"] and len(state["g"]) == 2
    with pytest.raises(ValueError, match="one expression per fork"):
        sgl.function(lambda s: s.fork(2).__iadd__(["only one"])).run()
    with pytest.raises(ValueError, match="mode"):
        sgl.function(lambda s: s.fork(2).join("zip")).run()


def test_concate_and_append_joins_child_text(fake_backend):
    @sgl.function
    def encode(s):
        s += "Facts:\n"
        forks = s.fork(3)
        forks += lambda i: f"fact {i}\n"
        forks.join(mode="concate_and_append")
        s += "end"

    assert encode.run().text() == "Facts:\nfact 0\nfact 1\nfact 2\nend"


def test_copy_and_var_scope(fake_backend):
    @sgl.function
    def program(s):
        s += "start "
        with s.var_scope("middle"):
            s += "in the middle"
        with s.copy() as c:
            c += " branch" + sgl.gen("branch", max_tokens=2)
        s += " end"

    state = program.run()
    assert state["middle"] == "in the middle"
    assert state.text() == "start in the middle end"
    assert len(state["branch"]) == 1 and "middle" in state and "nothing" not in state


def test_streaming_yields_incremental_chunks():
    engine = FakeEngine(delay=0.2)

    @sgl.function
    def story(s):
        s += "Once" + sgl.gen("rest", max_tokens=8, ignore_eos=True)

    state = story.run(backend=sgl.EngineBackend(engine), stream=True)
    chunks = list(state.text_iter("rest"))
    assert len(chunks) >= 3 and "".join(chunks) == state["rest"]
    assert state.get_meta_info("rest")["completion_tokens"] == 8
    assert engine.requests[-1]["stream"] is True


def test_text_iter_without_stream_yields_once(fake_backend):
    @sgl.function
    def one(s):
        s += "x" + sgl.gen("y", max_tokens=2)

    state = one.run()
    assert list(state.text_iter()) == [state.text()]
    assert list(state.text_iter("y")) == [state["y"]]


def test_use_thread_false_runs_inline(fake_backend):
    @sgl.function
    def inline(s):
        s += "a" + sgl.gen("x", max_tokens=2)
        s["seen"] = s["x"]

    state = inline.run(use_thread=False)
    assert state["seen"] == state["x"]


def test_min_and_max_tokens_reach_the_engine(fake_backend):
    @sgl.function
    def long(s):
        s += "Q:" + sgl.gen("a", min_tokens=10, max_tokens=12)

    meta = long.run().get_meta_info("a")
    assert 10 <= meta["completion_tokens"] <= 12


def test_image_on_text_only_model_is_a_clear_error(tmp_path, fake_backend):
    path = tmp_path / "pixel.png"
    path.write_bytes(b"\x89PNG fake")

    @sgl.function
    def look(s):
        s += sgl.user(sgl.image(str(path)) + "What is this?")
        s += sgl.assistant(sgl.gen("a", max_tokens=2))

    assert "does not support image input" in str(look.run().error())
    state = look.run(backend=sgl.EngineBackend(FakeEngine(supports_images=True)))
    content = state.messages()[0]["content"]
    assert content[0] == {"type": "text", "text": "<image>What is this?"}  # the image token stays, as in SGLang
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="image"):
        sgl.image(None)
    assert "no file" in str(sgl.function(lambda s: s.__iadd__(sgl.image("/nope.png"))).run().error())


def test_completion_speculation_saves_calls():
    engine = FakeEngine(responder=lambda prompt, params: " Ann\nBirthday: May 1\nJob: chef\n")

    @sgl.function(num_api_spec_tokens=32)
    def character(s):
        s += "Name:" + sgl.gen("name", stop="\n") + "\nBirthday:" + sgl.gen("birthday", stop="\n")
        s += "\nJob:" + sgl.gen("job", stop="\n") + "\n"

    state = character.run(backend=sgl.EngineBackend(engine))
    assert (state["name"], state["birthday"], state["job"]) == (" Ann", " May 1", " chef")
    assert len(_gen_requests(engine)) == 1


def test_run_batch_precaches_prefix_and_keeps_order(capsys):
    engine = FakeEngine()
    prefix = "A long shared instruction that all programs of the batch start with, " * 2

    @sgl.function
    def item(s, i):
        s += prefix + "Item " + str(i) + ":" + sgl.gen("x", max_tokens=2)

    states = item.run_batch([{"i": i} for i in range(5)], backend=sgl.EngineBackend(engine), progress_bar=True)
    # The traced constant prefix ends where str(argument) begins.
    assert engine.requests[0]["prompt"] == prefix + "Item "
    assert engine.requests[0]["sampling_params"]["max_new_tokens"] == 0
    assert [st.text().split("Item ")[1][0] for st in states] == ["0", "1", "2", "3", "4"]
    assert "5/5" in capsys.readouterr().err
    assert item.cache(backend=sgl.EngineBackend(FakeEngine())) == prefix + "Item "


def test_trace_records_the_graph(fake_backend):
    @sgl.function
    def traced(s, question):
        s += "Q: " + question
        s += sgl.gen("answer")
        s += s["answer"]

    tracer = traced.trace()
    kinds = [type(n).__name__ for n in tracer.flatten_nodes()]
    assert kinds == ["SglConstantText", "SglArgument", "SglGen", "SglVariable"]
    assert "Gen('answer')" in tracer.last_node.print_graph_dfs()

    @sgl.function
    def fstring(s, question):
        s += f"Q: {question}"

    with pytest.raises(TypeError, match="f-string"):
        fstring.trace()
