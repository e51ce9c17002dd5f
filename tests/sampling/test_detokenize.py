"""Incremental detokenization: streamed pieces add up to the full decode and never show U+FFFD."""

import random

import pytest

from sgl.runtime.detokenizer.incremental import (
    DecodeState,
    IncrementalDetokenizer,
    check_stop_str,
    detokenize_batch,
    find_printable_text,
    find_stop,
    trim_matched_ids,
    trim_output,
)
from sgl.runtime.sampling.finish_reason import FinishLength, FinishMatchedStr, FinishMatchedToken

TEXTS = [
    "Héllo wörld 😀🎉 你好世界 naïve café — ok",
    "Über die Straße: 日本語のテキスト 🇫🇷 👩‍💻 déjà vu!\nñandú",
    "plain ascii words only, nothing fancy",
]
IM_END = 2  # <|im_end|> in SmolLM2


class CountingTokenizer:
    """Forwards to a real tokenizer and counts batch_decode calls."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def batch_decode(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer.batch_decode(*args, **kwargs)


class ByteTokenizer:
    """One token per UTF-8 byte: every non-ASCII character spans several tokens."""

    def batch_decode(self, seqs, skip_special_tokens=True, spaces_between_special_tokens=True):
        return [bytes(s).decode("utf-8", errors="replace") for s in seqs]


def _stream(detok, ids, chunk_sizes):
    pieces, pos = [], 0
    for size in chunk_sizes:
        chunk = ids[pos : pos + size]
        pos += size
        pieces.append(detok.step(chunk, FinishLength(pos) if pos >= len(ids) else None))
    return pieces


def _ones(n):
    return [1] * n


@pytest.mark.parametrize("text", TEXTS)
def test_one_id_at_a_time(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = _stream(IncrementalDetokenizer(tokenizer), ids, _ones(len(ids)))
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in piece for piece in pieces)
    if not text.isascii():
        assert "" in pieces  # some tokens are partial characters and were held back


def test_first_tokens_decoded_after_prompt_context(tokenizer):
    prompt = tokenizer.encode("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer.encode("Bonjour 👋 — ça va? 你好", add_special_tokens=False)
    pieces = _stream(IncrementalDetokenizer(tokenizer, prompt), ids, _ones(len(ids)))
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_batched_random_chunks_one_decode_call_per_step(tokenizer):
    counting = CountingTokenizer(tokenizer)
    rng = random.Random(0)
    all_ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    states = [DecodeState.from_context() for _ in TEXTS]
    positions = [0] * len(TEXTS)
    previous = [""] * len(TEXTS)
    while any(pos < len(ids) for pos, ids in zip(positions, all_ids)):
        reasons = []
        for i, ids in enumerate(all_ids):
            size = rng.randint(0, 4)
            states[i].decode_ids.extend(ids[positions[i] : positions[i] + size])
            positions[i] = min(positions[i] + size, len(ids))
            reasons.append(FinishLength(len(ids)) if positions[i] == len(ids) else None)
        calls = counting.calls
        outputs = detokenize_batch(counting, states, reasons)
        assert counting.calls == calls + 1
        for i, out in enumerate(outputs):
            assert out.startswith(previous[i]) and "\ufffd" not in out  # cumulative, never shrinks
            previous[i] = out
    assert previous == [tokenizer.decode(ids) for ids in all_ids]


def test_byte_level_chunks_never_shrink_or_show_partial_chars():
    text = "ab 你😀 wörds and 🎉🎉 ok 日本"
    data = list(text.encode("utf-8"))
    for seed in range(20):
        rng = random.Random(seed)
        sizes, left = [], len(data)
        while left:
            sizes.append(min(left, rng.randint(1, 6)))
            left -= sizes[-1]
        detok, shown = IncrementalDetokenizer(ByteTokenizer()), ""
        for piece in _stream(detok, data, sizes):
            assert "\ufffd" not in piece
            shown += piece
            assert text.startswith(shown)
        assert shown == text == detok.text


def test_held_back_text_shows_whole_words_only():
    detok = IncrementalDetokenizer(ByteTokenizer())
    emoji = list("😀".encode("utf-8"))
    assert detok.step(list(b"hello wor") + emoji[:1]) == "hello "
    assert detok.step(emoji[1:]) == "wor😀"


def test_special_tokens_skipped_or_kept(tokenizer):
    ids = (
        tokenizer.encode("Hi", add_special_tokens=False)
        + [IM_END]
        + tokenizer.encode(" there", add_special_tokens=False)
    )
    for skip in (True, False):
        pieces = _stream(IncrementalDetokenizer(tokenizer, skip_special_tokens=skip), ids, _ones(len(ids)))
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=skip)
    assert "<|im_end|>" not in tokenizer.decode(ids, skip_special_tokens=True)
    # Per-request flags inside one batch.
    states = [DecodeState(decode_ids=list(ids)), DecodeState(decode_ids=list(ids))]
    outs = detokenize_batch(tokenizer, states, [FinishLength(3)] * 2, skip_special_tokens=[True, False])
    assert outs == ["Hi there", "Hi<|im_end|> there"]


def test_stop_string_trimmed_at_first_occurrence(tokenizer):
    ids = tokenizer.encode("The answer is 42. END and END again", add_special_tokens=False)
    for no_stop_trim, expected in (
        (False, "The answer is 42. "),
        (True, "The answer is 42. END and END again"),
    ):
        detok = IncrementalDetokenizer(tokenizer, no_stop_trim=no_stop_trim)
        for token in ids[:-1]:
            detok.step([token])
        detok.step(ids[-1:], FinishMatchedStr("END"))
        assert detok.text == expected


def test_matched_token_not_decoded(tokenizer):
    ids = tokenizer.encode("Done.", add_special_tokens=False) + [IM_END]
    for no_stop_trim, expected in ((False, "Done."), (True, "Done.<|im_end|>")):
        detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=False, no_stop_trim=no_stop_trim)
        pieces = [detok.step([t]) for t in ids[:-1]]
        pieces.append(detok.step(ids[-1:], {"type": "stop", "matched": IM_END}))  # the wire form works too
        assert "".join(pieces) == detok.text == expected


def test_find_stop_and_check_stop_str():
    assert find_stop("abc STOP x END", ["END", "STOP"]) == (4, "STOP")
    assert find_stop("aaa", ["b", ""]) == (-1, None)  # an empty stop string never matches
    assert check_stop_str("... User:", ["\nUser:", "User:"]) == "User:"
    assert check_stop_str("tail", ["END"], decoded_text="the END") == "END"
    assert check_stop_str("tail", ["END"]) is None


def test_trim_helpers():
    assert trim_output("a STOP b STOP", FinishMatchedStr("STOP")) == "a "
    assert trim_output("a STOP", FinishMatchedStr("STOP"), no_stop_trim=True) == "a STOP"
    assert trim_output("abc", FinishMatchedToken(2)) == "abc"
    assert trim_output("abc", None) == "abc" and trim_output("abc", FinishLength(3)) == "abc"
    assert trim_matched_ids([5, 6, 2], FinishMatchedToken(2)) == [5, 6]
    assert trim_matched_ids([5, 6, 2], FinishMatchedToken(2), no_stop_trim=True) == [5, 6, 2]
    assert trim_matched_ids([5, 6], FinishMatchedStr("x")) == [5, 6]
    assert trim_matched_ids([5, 6], FinishLength(2)) == [5, 6]


def test_find_printable_text():
    assert find_printable_text("hello wor") == "hello "
    assert find_printable_text("line\n") == "line\n"
    assert find_printable_text("你好") == "你好"
    assert find_printable_text("你好ab") == "你好"
    assert find_printable_text("ab 😀\ufffd") == "ab "
    assert find_printable_text("x\ufffd") == ""
    assert find_printable_text("") == ""


def test_batch_argument_errors(tokenizer):
    states = [DecodeState(), DecodeState()]
    with pytest.raises(ValueError, match="finish_reasons"):
        detokenize_batch(tokenizer, states, [None])
    with pytest.raises(ValueError, match="skip_special_tokens"):
        detokenize_batch(tokenizer, states, skip_special_tokens=[True])
