"""The server gives the same greedy text as sgl.Engine, and streams add up to the full text,
multi-byte characters included."""

from __future__ import annotations

import json

import pytest

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Emoji party: 😀😃😄😁😆😅😂🤣😊😇🙂🙃😉😌😍🥰😘",
    "Les mots français: café, crème, élève, naïve, forêt, où, déjà, ",
    "日本語の文章：私は",
]
GREEDY = {"max_new_tokens": 16, "temperature": 0}


@pytest.fixture(scope="module")
def engine():
    import sgl

    eng = sgl.Engine(max_total_tokens=4096)
    try:
        yield eng
    finally:
        eng.shutdown()


def test_generate_matches_engine(server, engine):
    for prompt in PROMPTS:
        via_http = server.post("/generate", json={"text": prompt, "sampling_params": GREEDY}).json()
        in_process = engine.generate(prompt, GREEDY)
        assert via_http["text"] == in_process["text"], prompt
        assert via_http["meta_info"]["completion_tokens"] == in_process["meta_info"]["completion_tokens"]


def _stream_text(server, body) -> str:
    texts = [""]
    with server.post("/generate", json={**body, "stream": True}, stream=True) as r:
        for line in r.iter_lines(decode_unicode=False):
            if line and line != b"data: [DONE]":
                event = json.loads(line[len(b"data: "):])
                assert event["text"].startswith(texts[-1])  # cumulative, never rewritten
                texts.append(event["text"])
    # No half characters on the wire while the request runs; the last event may end with one
    # when max_new_tokens cuts a character's bytes (the full text then ends the same way).
    assert not any("\ufffd" in text for text in texts[:-1]), texts
    return texts[-1]


def test_stream_concat_equals_full_text_with_multibyte(server):
    non_ascii = 0
    for prompt in PROMPTS:
        body = {"text": prompt, "sampling_params": {"max_new_tokens": 24, "temperature": 0}}
        full = server.post("/generate", json=body).json()["text"]
        assert _stream_text(server, body) == full, prompt
        non_ascii += any(ord(ch) > 127 for ch in full)
    assert non_ascii >= 2  # the emoji / accented / CJK prompts really produced multi-byte output


def test_openai_stream_concat_equals_full_text(openai_client, model_name):
    messages = [{"role": "user", "content": "Reply with three emoji: 😀😃😄"}]
    kw = dict(model=model_name, messages=messages, max_tokens=20, temperature=0)
    full = openai_client.chat.completions.create(**kw).choices[0].message.content
    chunks = openai_client.chat.completions.create(**kw, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full
    prompt = PROMPTS[2]
    full = openai_client.completions.create(model=model_name, prompt=prompt, max_tokens=20, temperature=0).choices[0].text
    chunks = openai_client.completions.create(model=model_name, prompt=prompt, max_tokens=20, temperature=0, stream=True)
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == full and any(ord(ch) > 0xFFFF for ch in full)
