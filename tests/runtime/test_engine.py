"""sgl.Engine end to end on the default model: results, batches, streaming, async, bad input."""

import asyncio

import pytest

from sgl.runtime.entry.engine import Engine


@pytest.fixture(scope="module")
def engine():
    with Engine(max_total_tokens=8192) as eng:
        yield eng


@pytest.fixture(autouse=True)
def kv_integrity(request):
    """After every test that used the engine: free + cached + in use == total."""
    yield
    if "engine" in request.fixturenames:
        info = request.getfixturevalue("engine").get_server_info()
        assert info["kv_integrity"] == "ok", info["kv_integrity"]


def _greedy(n=8, **kw):
    return {"max_new_tokens": n, "temperature": 0, **kw}


def test_generate_single_and_batch(engine):
    one = engine.generate("The capital of France is", _greedy())
    assert isinstance(one["text"], str) and one["text"]
    meta = one["meta_info"]
    assert meta["completion_tokens"] == 8 and meta["finish_reason"] == {"type": "length", "length": 8}
    assert set(meta) >= {"id", "prompt_tokens", "cached_tokens"}
    batch = engine.generate(["The capital of France is", "1, 2, 3,"], _greedy())
    assert [b["text"] for b in batch][0] == one["text"]
    by_ids = engine.generate(input_ids=engine.tokenizer.encode("The capital of France is"), sampling_params=_greedy())
    assert by_ids["text"] == one["text"]
    assert by_ids["meta_info"]["cached_tokens"] > 0


def test_stream_concatenates_to_full_text(engine):
    prompt = "Write the word café three times:"
    full = engine.generate(prompt, _greedy(24))["text"]
    chunks = list(engine.generate(prompt, _greedy(24), stream=True))
    assert "".join(c["text"] for c in chunks) == full
    assert chunks[-1]["meta_info"]["finish_reason"] is not None
    assert all("\ufffd" not in c["text"] for c in chunks)


def test_async_generate_and_stream(engine):
    async def main():
        res = await engine.async_generate("Hello", _greedy(4))
        pieces = [c["text"] async for c in await engine.async_generate("Hello", _greedy(4), stream=True)]
        return res, pieces

    res, pieces = asyncio.run(main())
    assert "".join(pieces) == res["text"]


def test_stop_string_is_trimmed(engine):
    base = engine.generate("1, 2, 3, 4,", _greedy(12))["text"]
    assert "7" in base
    stopped = engine.generate("1, 2, 3, 4,", _greedy(12, stop=["7"]))
    assert stopped["text"] == base[: base.index("7")]
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": "7"}
    kept = engine.generate("1, 2, 3, 4,", _greedy(12, stop=["7"], no_stop_trim=True))
    assert kept["text"] == base[: base.index("7") + 1]


def test_parallel_samples_and_seed(engine):
    outs = engine.generate("Tell me a story:", {"max_new_tokens": 6, "n": 3, "temperature": 1.0, "ignore_eos": True})
    assert len(outs) == 3 and all(o["meta_info"]["completion_tokens"] == 6 for o in outs)
    # Same seed, same computation (a cached prefix would change the logits in the last bits).
    assert engine.flush_cache()
    a = engine.generate("Pick a number:", {"max_new_tokens": 6, "temperature": 1.0, "seed": 7})
    assert engine.flush_cache()
    b = engine.generate("Pick a number:", {"max_new_tokens": 6, "temperature": 1.0, "seed": 7})
    assert a["text"] == b["text"]


def test_logprobs(engine):
    out = engine.generate("Hello world", _greedy(3), return_logprob=True, logprob_start_len=0,
                          top_logprobs_num=2, return_text_in_logprobs=True)
    meta = out["meta_info"]
    n_prompt = meta["prompt_tokens"]
    assert len(meta["input_token_logprobs"]) == n_prompt and meta["input_token_logprobs"][0][0] is None
    assert len(meta["output_token_logprobs"]) == 3
    for (lp, tid, text), top in zip(meta["output_token_logprobs"], meta["output_top_logprobs"]):
        assert top[0][1] == tid and abs(top[0][0] - lp) < 1e-5  # greedy picks the top token
        assert isinstance(text, str)


@pytest.mark.parametrize(
    "params, word",
    [
        ({"top_p": 0}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"top_k": 0}, "top_k"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_sampling_params_raise_and_engine_keeps_serving(engine, params, word):
    with pytest.raises(ValueError, match=word):
        engine.generate("Hi", params)
    assert engine.generate("Hi", _greedy(2))["meta_info"]["completion_tokens"] == 2


def test_prompt_longer_than_context(engine):
    ctx = engine.core.model_config.context_len
    with pytest.raises(ValueError, match="^input_ids: the prompt has .* prompt limit"):
        engine.generate(input_ids=[100] * (ctx + 10), sampling_params=_greedy(2))
    with pytest.raises(ValueError, match="Either text, input_ids"):
        engine.generate(sampling_params=_greedy(2))
    info = engine.get_server_info()
    assert info["kv_integrity"] == "ok"
    assert info["available_kv_tokens"] + info["cached_tokens"] == info["max_total_num_tokens"]


def test_bad_model_paths_fail_at_once(tmp_path):
    with pytest.raises(ValueError, match="does not exist|expected"):
        Engine(model_path=str(tmp_path / "missing"))
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a gguf file")
    with pytest.raises(ValueError, match="GGUF"):
        Engine(model_path=str(fake))


def test_encode_needs_an_embedding_model(engine):
    with pytest.raises(ValueError, match="does not appear to be an embedding model by default"):
        engine.encode("Hello")
