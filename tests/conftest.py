"""Session-wide fixtures: the default model path and tokenizer, loaded once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_gguf() -> str:
    from sgl.runtime.models.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tokenizer(default_gguf):
    from sgl.runtime.models.tokenizer import get_tokenizer

    return get_tokenizer(default_gguf)
