"""Kernel tests run on CPU through the Triton interpreter (tiny shapes) or, where CUDA is present and
TRITON_INTERPRET is unset, on the GPU. Without CUDA, tests/conftest.py switches the interpreter on
before anything is collected."""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def device() -> str:
    """Where the small-shape tests run: CPU under the interpreter, else the GPU."""
    from sgl.kernels.utils import interpreting

    if interpreting():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA GPU")


@pytest.fixture
def gen() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(1234)
    return g
