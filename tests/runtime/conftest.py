"""Runtime fixtures: one loaded model shared by many in-process schedulers, and the HF oracle."""

from __future__ import annotations

import pytest

from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs



@pytest.fixture(scope="session")
def base_runner(default_gguf):
    return ModelRunner(ServerArgs(model_path=default_gguf, max_total_tokens=2048, log_level="error"))


@pytest.fixture(scope="session")
def make_scheduler(base_runner, tokenizer):
    """Build a scheduler with its own KV pool and flags, reusing the loaded weights."""

    def build(**overrides) -> Scheduler:
        overrides.setdefault("max_total_tokens", 8192)
        sa = ServerArgs(model_path=base_runner.server_args.model_path, log_level="error", random_seed=0, **overrides)
        runner = ModelRunner(sa, model_config=base_runner.model_config, model=base_runner.model)
        return Scheduler(sa, model_runner=runner, tokenizer=tokenizer)

    return build
