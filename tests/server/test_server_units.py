"""Server pieces that need no model: chat templates, error shapes, bench math."""

from __future__ import annotations

import pytest

from sgl.runtime.server.chat_templates import BUILTIN_TEMPLATES, render_chat, resolve_chat_template
from sgl.runtime.server.errors import guess_param, pydantic_error

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_builtin_templates_render_and_continue(tokenizer):
    for name in BUILTIN_TEMPLATES:
        template = resolve_chat_template(name, tokenizer)
        prompt = render_chat(template, tokenizer, MESSAGES)
        assert "Be brief." in prompt and "Hi" in prompt
        continued = render_chat(template, tokenizer, MESSAGES + [{"role": "assistant", "content": "Hello, I"}])
        assert continued.endswith("Hello, I"), name  # no end-of-turn after the continued text
        for stop in template.stop:
            assert not continued.endswith(stop)


def test_chatml_generation_prompt(tokenizer):
    prompt = render_chat(resolve_chat_template("chatml", tokenizer), tokenizer, MESSAGES)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tokenizer_template_is_the_default(tokenizer):
    template = resolve_chat_template(None, tokenizer)
    assert template.source == tokenizer.chat_template and template.stop == []


def test_template_from_file_and_bad_names(tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    template = resolve_chat_template(str(path), tokenizer)
    assert render_chat(template, tokenizer, MESSAGES) == "[system] Be brief.\n[user] Hi\n"
    with pytest.raises(ValueError, match="built-in"):
        resolve_chat_template("no-such-template", tokenizer)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_chat_template(str(tmp_path / "missing.jinja"), tokenizer)


def test_template_errors_are_value_errors(tokenizer):
    strict = resolve_chat_template("{{ raise_exception('roles must alternate') }}", tokenizer)
    with pytest.raises(ValueError, match="roles must alternate"):
        render_chat(strict, tokenizer, MESSAGES)


def test_pydantic_errors_name_the_field():
    from pydantic import ValidationError

    from sgl.runtime.server.protocol import GenerateRequest

    for body, param in [({"text": 5}, "text"), ({"sampling_params": [{"temperature": "x"}]}, "sampling_params.0.temperature"),
                        ({"sampling_params": {"nope": 1}}, "sampling_params.nope"), ({"stream": "maybe"}, "stream")]:
        with pytest.raises(ValidationError) as info:
            GenerateRequest.model_validate(body)
        message, got = pydantic_error(info.value.errors())
        assert got == param and message.startswith(param + ": ")


def test_guess_param():
    known = ["top_p", "temperature"]
    assert guess_param("top_p must be in (0, 1], got 2.", known) == "top_p"
    assert guess_param("Unknown sampling parameter: 'foo'.", known) == "foo"
    assert guess_param("The input (9000 tokens) is longer", known) is None


def test_bench_summary_math():
    from sgl.runtime.bench.serving import RequestResult, summarize

    results = [RequestResult(10, True, 5, ttft=0.1, latency=0.5, itl=[0.1] * 4),
               RequestResult(20, True, 1, ttft=0.2, latency=0.2), RequestResult(5, error="boom")]
    s = summarize(results, duration=2.0)
    assert s["completed"] == 2 and s["failed"] == 1
    assert s["total_input_tokens"] == 30 and s["output_throughput"] == 3.0
    assert s["mean_ttft_ms"] == pytest.approx(150.0) and s["mean_tpot_ms"] == pytest.approx(100.0)
    assert s["concurrency"] == pytest.approx(0.35)


# ---- the app with a fake runtime (no processes) -------------------------------------------------
class _DeadTokenizerManager:
    dead_reason = "scheduler process died (exit code -9)"

    async def generate_request(self, obj, is_disconnected=None):
        from sgl.runtime.tokenizer.tokenizer_manager import RuntimeDeadError

        raise RuntimeDeadError(self.dead_reason)
        yield  # an async generator, like the real one


def _app(api_key=None, tm=None):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from sgl.runtime.server.http_server import create_app
    from sgl.runtime.server.state import ServerState
    from sgl.runtime.server_args import ServerArgs

    core = SimpleNamespace(tokenizer_manager=tm, tokenizer=None,
                           model_config=SimpleNamespace(context_len=2048, vocab_size=1000, is_generation=True))
    args = ServerArgs(model_path="dummy-not-loaded", tokenizer_path="dummy", api_key=api_key)
    return TestClient(create_app(ServerState(args, core)))


def test_dead_runtime_fails_health_and_requests():
    client = _app(tm=_DeadTokenizerManager())
    r = client.get("/health")
    assert r.status_code == 503 and "scheduler process died" in r.json()["error"]["message"]
    r = client.post("/generate", json={"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 2}})
    assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
    assert client.get("/health_generate").status_code == 503


def test_api_key_middleware_and_open_health():
    client = _app(api_key="k", tm=_DeadTokenizerManager())
    assert client.get("/get_model_info").status_code == 401
    assert client.get("/get_model_info", headers={"Authorization": "Bearer k"}).status_code == 200
    assert client.get("/health").status_code == 503  # reachable without a key (and the runtime is down)
    assert client.options("/generate").status_code != 401
