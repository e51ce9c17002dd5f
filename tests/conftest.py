"""Session-wide fixtures: the default model path and tokenizer, loaded once.

Without CUDA, Triton's interpreter is switched on here, before any test module is collected: Triton
reads TRITON_INTERPRET once and keeps it, and a module collected before tests/kernels (transformers,
imported by tests/distributed, imports Triton) would otherwise fix it to "off" for the whole run,
leaving kernels interpreted but their @triton.jit helpers not."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def default_gguf() -> str:
    from sgl.runtime.models.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tokenizer(default_gguf):
    from sgl.runtime.models.tokenizer import get_tokenizer

    return get_tokenizer(default_gguf)
