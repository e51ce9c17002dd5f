"""The one-rank reference on the default model: greedy tokens and logprobs of PROMPT_IDS in
float32 through an in-process scheduler (the TP=1 path that tests/runtime checks against HF)."""

from __future__ import annotations

import pytest

from sgltest.runtime_helpers import PROMPTS
from sgltest.tp_ranks import NEW_TOKENS


@pytest.fixture(scope="session")
def prompt_ids(tokenizer):
    return [tokenizer.encode(p) for p in PROMPTS[:4]]


@pytest.fixture(scope="session")
def tp1_reference(default_gguf, prompt_ids):
    """{i: (token ids, logprobs)} of greedy decoding at tp_size 1."""
    from sgl.runtime.executor.model_runner import ModelRunner
    from sgl.runtime.scheduler.scheduler import Scheduler
    from sgl.runtime.server_args import ServerArgs
    from sgltest.tp_ranks import greedy_requests

    sa = ServerArgs(model_path=default_gguf, dtype="float32", max_total_tokens=2048, log_level="error",
                    random_seed=0, skip_tokenizer_init=True)
    results = greedy_requests(Scheduler(sa, model_runner=ModelRunner(sa)), prompt_ids, NEW_TOKENS, cached=False)
    return {int(rid[1:]): (r["ids"], r["logprobs"]) for rid, r in results.items()}

