"""Session fixtures: the default GGUF model, ours and HF's, loaded once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gguf_path() -> str:
    from sgl.runtime.models.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def smol_config(gguf_path):
    from sgl.runtime.models.model_config import ModelConfig

    return ModelConfig.load(gguf_path, "gguf", device="cpu", dtype="float32")  # HF's oracle is float32


@pytest.fixture(scope="session")
def smol_model(smol_config):
    from sgl.runtime.models.loader import load_model

    return load_model(smol_config, device="cpu")


@pytest.fixture(scope="session")
def smol_tokenizer(gguf_path):
    from sgl.runtime.models.tokenizer import get_tokenizer

    return get_tokenizer(gguf_path)


@pytest.fixture(scope="session")
def hf_smol_model(gguf_path):
    from sgltest.hf_oracle import load_hf_gguf_model

    return load_hf_gguf_model(gguf_path)
