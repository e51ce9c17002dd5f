"""Finish reasons (wire dicts) and the scheduler's finish check order."""

import pickle

from sgl.runtime.sampling.finish_reason import (
    FinishAbort,
    FinishLength,
    FinishMatchedStr,
    FinishMatchedToken,
    check_finished,
    finish_reason_to_json,
)
from sgl.runtime.sampling.params import SamplingParams


def _params(**kw):
    p = SamplingParams(**kw)
    p.normalize(None)
    return p


def test_to_json_shapes():
    assert FinishMatchedToken(matched=2).to_json() == {"type": "stop", "matched": 2}
    assert FinishMatchedStr(matched="\n").to_json() == {"type": "stop", "matched": "\n"}
    assert FinishLength(length=16).to_json() == {"type": "length", "length": 16}
    assert FinishAbort("bye", 400, "BadRequestError").to_json() == {
        "type": "abort",
        "message": "bye",
        "status_code": 400,
        "err_type": "BadRequestError",
    }
    assert FinishAbort().to_json()["status_code"] is None
    assert FinishAbort().is_error and not FinishLength(1).is_error
    assert finish_reason_to_json(None) is None
    assert finish_reason_to_json({"type": "length", "length": 1}) == {"type": "length", "length": 1}
    assert pickle.loads(pickle.dumps(FinishMatchedStr("x"))) == FinishMatchedStr("x")


def test_order_abort_length_token_string():
    p = _params(max_new_tokens=3, stop_token_ids=[7], stop="zz")
    abort = FinishAbort("client gone")
    assert check_finished([7, 7, 7], p, abort=abort) is abort
    assert check_finished([1, 2, 7], p) == FinishLength(length=3)  # length wins over a stop token
    assert check_finished([1, 7], p) == FinishMatchedToken(matched=7)
    assert check_finished([1, 2], p) is None


def test_eos_and_ignore_eos():
    p = _params(max_new_tokens=10)
    assert check_finished([5, 2], p, eos_token_ids={2}) == FinishMatchedToken(matched=2)
    assert check_finished([5, 3], p, eos_token_ids={2}) is None
    ignoring = _params(max_new_tokens=10, ignore_eos=True, stop_token_ids=[3])
    assert check_finished([5, 2], ignoring, eos_token_ids={2}) is None
    assert check_finished([5, 3], ignoring, eos_token_ids={2}) is None


def test_max_new_tokens_zero_finishes_at_once():
    assert check_finished([], _params(max_new_tokens=0)) == FinishLength(length=0)
    assert check_finished([], _params(max_new_tokens=4)) is None


def test_stop_string_across_tokens(tokenizer):
    p = SamplingParams(stop=["Paris is"], max_new_tokens=50)
    p.normalize(tokenizer)
    prefix = tokenizer.encode("The capital of France: ", add_special_tokens=False)
    stop_ids = tokenizer.encode("Paris is", add_special_tokens=False)
    assert len(stop_ids) >= 2
    assert check_finished(prefix + stop_ids[:-1], p, tokenizer=tokenizer) is None
    assert check_finished(prefix + stop_ids, p, tokenizer=tokenizer) == FinishMatchedStr("Paris is")
    # Text the scheduler already holds (e.g. after a jump-forward) is searched too.
    assert check_finished([5], p, tokenizer=tokenizer, decoded_text="so Paris is") == FinishMatchedStr(
        "Paris is"
    )
