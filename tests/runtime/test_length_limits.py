"""The tokenizer manager's two length limits, at their exact boundaries: the prompt limit and the
prompt + max_new_tokens limit, each error quoting the one limit it broke."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from sgl.runtime.tokenizer.generate_input import SingleReq
from sgl.runtime.server_args import PortArgs
from sgl.runtime.tokenizer.tokenizer_manager import TokenizerManager

# As a scheduler with context 64 and a larger KV pool reports them: max_req_len = 63,
# max_req_input_len = 58. So a prompt has at most 57 tokens, prompt + max_new_tokens at most 62.
INFO = {"max_req_input_len": 58, "max_req_len": 63}
MAX_PROMPT, MAX_TOTAL = 57, 62


@pytest.fixture
def tm():
    model_config = SimpleNamespace(context_len=64, vocab_size=1000)
    manager = TokenizerManager(None, PortArgs.init_new(), model_config, None, INFO)
    yield manager
    manager.close()


def prepare(tm, n: int, max_new_tokens):
    return tm._prepare(SingleReq("r", None, [5] * n, {"max_new_tokens": max_new_tokens}))


def numbers(message: str) -> set:
    return {int(x) for x in re.findall(r"\d+", message)}


def test_prompt_limit_boundary(tm):
    prepare(tm, MAX_PROMPT, None)
    prepare(tm, MAX_PROMPT, MAX_TOTAL - MAX_PROMPT)
    with pytest.raises(ValueError) as err:
        prepare(tm, MAX_PROMPT + 1, 1)
    message = str(err.value)
    assert message.startswith("input_ids:") and "prompt limit" in message
    assert numbers(message) == {MAX_PROMPT + 1, MAX_PROMPT}  # the size and the one limit, nothing else


def test_prompt_plus_max_new_tokens_boundary(tm):
    prepare(tm, 10, MAX_TOTAL - 10)
    prepare(tm, 10, None)  # "up to the limit": the scheduler resolves it
    with pytest.raises(ValueError) as err:
        prepare(tm, 10, MAX_TOTAL - 10 + 1)
    message = str(err.value)
    assert message.startswith("max_new_tokens:") and "prompt + max_new_tokens" in message
    assert numbers(message) == {10, MAX_TOTAL - 10 + 1, MAX_TOTAL + 1, MAX_TOTAL}


def test_empty_prompt_names_the_field(tm):
    with pytest.raises(ValueError, match="^input_ids: the input is empty"):
        prepare(tm, 0, 1)
