"""Token strings -> bytes: what outlines-core must see for byte-level BPE (SmolLM2)."""

import pytest

from sgl.runtime.constrained.vocab import TokenVocabulary


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return TokenVocabulary.from_tokenizer(tokenizer, 49152)


def test_bytes_decode_like_the_tokenizer(vocab, tokenizer):
    texts = ['{"name": "Jo hn"}\n\t x', "naïve café 😀 日本語", "  two  spaces", "a\"b\\c"]
    for text in texts:
        ids = tokenizer.encode(text)
        assert b"".join(vocab.token_bytes[i] for i in ids).decode("utf-8") == tokenizer.decode(ids)


def test_every_decodable_token_matches(vocab, tokenizer):
    mismatches = 0
    for tid, data in enumerate(vocab.token_bytes):
        if data is None:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a multi-byte character: decode() would show U+FFFD
        mismatches += text != tokenizer.decode([tid])
    assert mismatches == 0


def test_space_token_and_specials(vocab, tokenizer):
    assert vocab.token_bytes[tokenizer.convert_tokens_to_ids("Ġ")] == b" "
    for tid in tokenizer.all_special_ids:
        assert vocab.token_bytes[tid] is None
    assert vocab.eos_token_ids == [tokenizer.eos_token_id]
    assert vocab.single_byte_ids[ord("{")] == tokenizer.convert_tokens_to_ids("{")
    assert tokenizer.eos_token_id not in [i for ids in vocab.bytes_to_ids().values() for i in ids]


def test_invalid_vocabularies():
    with pytest.raises(ValueError, match="eos_token_ids"):
        TokenVocabulary.from_bytes([b"a"], [])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenVocabulary.from_bytes([b"a"], [5])
    with pytest.raises(ValueError, match="do not fit"):
        TokenVocabulary.from_bytes([b"a", b"b", b"c"], [0], vocab_size=2)
