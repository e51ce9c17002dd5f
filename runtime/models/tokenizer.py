"""get_tokenizer: a transformers fast tokenizer from a local HF directory or a GGUF file's metadata.

Only local files are read (`local_files_only=True`): a path that does not exist is an error here,
because transformers would otherwise take it for a hub repo id.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Optional

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sgl.runtime.models.model_config import resolve_builtin_config
from sgl.runtime.models.gguf_file import gguf_field, is_gguf_file, open_gguf

TOKENIZER_MODES = ("auto", "slow")


def get_tokenizer(tokenizer_path: str, tokenizer_mode: str = "auto", trust_remote_code: bool = False,
                  **kwargs) -> PreTrainedTokenizerBase:
    """The tokenizer (with its chat template) for a local directory or .gguf file."""
    if tokenizer_mode not in TOKENIZER_MODES:
        raise ValueError(f"tokenizer_mode must be one of {list(TOKENIZER_MODES)}, got {tokenizer_mode!r}")
    if tokenizer_path and not os.path.exists(tokenizer_path) and resolve_builtin_config(tokenizer_path):
        raise ValueError(f"{tokenizer_path!r} is a built-in config without a tokenizer: pass --tokenizer-path or --skip-tokenizer-init")
    if not tokenizer_path or not os.path.exists(tokenizer_path):
        raise ValueError(f"tokenizer path {tokenizer_path!r} does not exist: expected a local directory or .gguf file")
    if os.path.isfile(tokenizer_path):
        return _gguf_tokenizer(tokenizer_path, **kwargs)
    return _dir_tokenizer(tokenizer_path, tokenizer_mode, trust_remote_code, **kwargs)


def _gguf_tokenizer(path: str, **kwargs) -> PreTrainedTokenizerBase:
    if not is_gguf_file(path):
        raise ValueError(f"tokenizer file {path!r} is not a GGUF file; pass a directory or a .gguf file")
    cache = _cache_dir(path)
    if cache and not kwargs and os.path.isfile(os.path.join(cache, "tokenizer_config.json")):
        try:
            return AutoTokenizer.from_pretrained(cache, local_files_only=True)
        except (OSError, ValueError):
            pass  # a damaged cache entry: convert again below
    directory, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True, **kwargs)
    if not tokenizer.chat_template:
        # older transformers drop the template during GGUF conversion; it is plain metadata
        tokenizer.chat_template = gguf_field(open_gguf(path), "tokenizer.chat_template", None)
    if cache and not kwargs:
        _save_cache(tokenizer, cache)
    return tokenizer


def _cache_dir(path: str) -> Optional[str]:
    """Converting a GGUF vocabulary takes seconds and every runtime process needs it: keep the
    converted tokenizer on disk, keyed by the file's path, size and mtime."""
    if os.environ.get("SGL_DISABLE_TOKENIZER_CACHE"):
        return None
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = os.environ.get("SGL_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sgl"))
    return os.path.join(root, "tokenizers", key)


def _save_cache(tokenizer: PreTrainedTokenizerBase, cache: str) -> None:
    tmp = f"{cache}.tmp{os.getpid()}"
    try:
        tokenizer.save_pretrained(tmp)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        os.replace(tmp, cache)  # atomic: concurrent processes never see a half-written entry
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _dir_tokenizer(path: str, mode: str, trust_remote_code: bool, **kwargs) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=mode != "slow", trust_remote_code=trust_remote_code,
                                             local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"cannot load a tokenizer from {path!r} ({e}); a config-only directory has none: "
            "pass --tokenizer-path or --skip-tokenizer-init"
        ) from e
