"""get_tokenizer from the default GGUF and from a local directory."""

from __future__ import annotations

import json

import pytest

from sgl.runtime.models.tokenizer import get_tokenizer

TEXTS = ["Hello world, how are you?", "  spaces\tand\nnewlines  ", "unicode: héllo 世界 🙂", "def f(x):\n    return x"]


def test_round_trip(smol_tokenizer):
    for text in TEXTS:
        ids = smol_tokenizer.encode(text, add_special_tokens=False)
        assert ids and smol_tokenizer.decode(ids) == text
    assert len(smol_tokenizer) == 49152


def test_special_tokens_and_chat_template(smol_tokenizer):
    assert smol_tokenizer.convert_tokens_to_ids("<|im_end|>") == smol_tokenizer.eos_token_id == 2
    assert smol_tokenizer.chat_template and "im_start" in smol_tokenizer.chat_template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    text = smol_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    ids = smol_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids == smol_tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(smol_tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


def test_directory_tokenizer_matches_gguf(smol_tokenizer, tmp_path):
    smol_tokenizer.save_pretrained(tmp_path)
    from_dir = get_tokenizer(str(tmp_path))
    for text in TEXTS:
        assert from_dir.encode(text) == smol_tokenizer.encode(text)
    assert from_dir.chat_template == smol_tokenizer.chat_template


def test_bad_tokenizer_paths(tmp_path, gguf_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="tokenizer_mode"):
        get_tokenizer(gguf_path, tokenizer_mode="fast")
    fake = tmp_path / "fake.gguf"
    fake.write_text("text")
    with pytest.raises(ValueError, match="not a GGUF file"):
        get_tokenizer(str(fake))
    config_only = tmp_path / "cfg"
    config_only.mkdir()
    (config_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="skip-tokenizer-init"):
        get_tokenizer(str(config_only))
    with pytest.raises(ValueError, match="skip-tokenizer-init"):
        get_tokenizer("llama-3.1-8b")


def test_disk_cache_gives_the_same_tokenizer(gguf_path, tmp_path, monkeypatch):
    from sgl.runtime.models.tokenizer import get_tokenizer

    monkeypatch.setenv("SGL_CACHE_DIR", str(tmp_path))
    fresh = get_tokenizer(gguf_path)
    assert any(tmp_path.rglob("tokenizer_config.json")), "the converted tokenizer should be cached"
    cached = get_tokenizer(gguf_path)
    text = "Héllo wörld 你好 🙂 <|im_start|>user\nhi<|im_end|>"
    assert cached.encode(text) == fresh.encode(text)
    msgs = [{"role": "user", "content": "Hi"}]
    assert cached.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == fresh.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    assert cached.eos_token_id == fresh.eos_token_id and cached.all_special_ids == fresh.all_special_ids
