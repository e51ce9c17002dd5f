"""Runtime fixtures: one loaded model shared by many in-process schedulers, and the HF oracle."""

from __future__ import annotations

import pytest

from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs



@pytest.fixture(scope="session")
def base_runner(default_gguf):
    # float32: these fixtures check the engine token for token against HF's float32 oracle and
    # against itself; the bf16 default of CPUs with native bf16 is tested in tests/models.
    return ModelRunner(ServerArgs(model_path=default_gguf, max_total_tokens=2048, log_level="error", dtype="float32"))


@pytest.fixture(scope="session")
def make_scheduler(base_runner, tokenizer):
    """Build a scheduler with its own KV pool and flags, reusing the loaded weights."""

    def build(**overrides) -> Scheduler:
        overrides.setdefault("max_total_tokens", 8192)
        overrides.setdefault("dtype", "float32")
        sa = ServerArgs(model_path=base_runner.server_args.model_path, log_level="error", random_seed=0, **overrides)
        runner = ModelRunner(sa, model_config=base_runner.model_config, model=base_runner.model)
        return Scheduler(sa, model_runner=runner, tokenizer=tokenizer)

    return build
