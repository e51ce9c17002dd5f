"""Process-wide settings of the frontend language (`sgl.global_config`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass
class GlobalConfig:
    """Field names and defaults follow SGLang's `global_config` so ported code keeps working."""

    # 2 prints the final text of every program run.
    verbosity: int = 0
    # Backend used when `run()` gets none; set through `sgl.set_default_backend`.
    default_backend: Any = None
    # run_batch traces the program and caches its constant prefix once before fanning out.
    enable_precache_with_tracing: bool = True
    # join("concate_and_append") may use a backend KV-concat path when the backend has one.
    enable_parallel_encoding: bool = True
    # Sent with every /generate call made by the SRT backends.
    skip_special_tokens_in_output: bool = True
    spaces_between_special_tokens_in_out: bool = True
    # Runtime scheduling constants, kept here because SGLang exposes them here.
    default_init_new_token_ratio: float = _env_float("SGLANG_INIT_NEW_TOKEN_RATIO", 0.7)
    default_min_new_token_ratio_factor: float = _env_float("SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR", 0.14)
    default_new_token_ratio_decay_steps: int = _env_int("SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS", 600)
    retract_decode_steps: int = 20
    flashinfer_workspace_size: int = 384 * 1024 * 1024


global_config = GlobalConfig()
