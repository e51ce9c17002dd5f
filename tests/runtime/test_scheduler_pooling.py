"""A causal LM served with --is-embedding, through the scheduler: prefill only, pooled, batched,
chunked and prefix-cached prompts give the embedding of one plain forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.ipc.messages import TokenizedEmbeddingReqInput
from sgl.runtime.layers.pooler import Pooler, PoolingType
from sgl.runtime.models.model_config import NOT_EMBEDDING_MODEL, NOT_GENERATION_MODEL
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs
from sgltest.model_testing import make_forward_batch
from sgltest.runtime_helpers import run_all, submit

PROMPTS = ["The capital of France is", "def add(a, b):\n    return a + b\n# now a longer line of code", "Hi"]


@pytest.fixture(scope="module")
def make_embedder(base_runner, tokenizer):
    def build(pooling: PoolingType = PoolingType.LAST, **overrides) -> Scheduler:
        overrides.setdefault("max_total_tokens", 4096)
        sa = ServerArgs(model_path=base_runner.server_args.model_path, log_level="error", random_seed=0,
                        dtype="float32", is_embedding=True, **overrides)
        config = dataclasses.replace(base_runner.model_config, is_generation=False)
        runner = ModelRunner(sa, model_config=config, model=base_runner.model)
        runner.pooler = Pooler(pooling, normalize=True)
        return Scheduler(sa, model_runner=runner, tokenizer=tokenizer)

    return build


@torch.no_grad()
def _reference(model, ids, pooling: PoolingType) -> torch.Tensor:
    fb = make_forward_batch([ids])
    hidden = model(fb.input_ids, fb.positions, fb).float()
    pooled = hidden[-1] if pooling is PoolingType.LAST else hidden.mean(0)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _embed(sched, tokenizer, prompts, rid="e"):
    for i, p in enumerate(prompts):
        sched.handle(TokenizedEmbeddingReqInput(f"{rid}{i}", p, tokenizer.encode(p)))
    results = run_all(sched)
    return [results[f"{rid}{i}"]["out"] for i in range(len(prompts))]


@pytest.mark.parametrize("pooling", list(PoolingType))
@pytest.mark.parametrize("flags", [{}, {"chunked_prefill_size": 8}, {"disable_radix_cache": True, "chunked_prefill_size": 8}])
def test_embeddings_equal_one_forward(make_embedder, base_runner, tokenizer, pooling, flags):
    sched = make_embedder(pooling, **flags)
    assert not sched.enable_overlap
    # twice: the second round meets its prompts in the prefix cache
    for round_ in range(2):
        outs = _embed(sched, tokenizer, PROMPTS, rid=f"r{round_}-")
        for prompt, out in zip(PROMPTS, outs):
            want = _reference(base_runner.model, tokenizer.encode(prompt), pooling)
            assert out.finished_reason.to_json() == {"type": "length", "length": 0}
            assert out.new_output_ids == [] and out.prompt_tokens == len(tokenizer.encode(prompt))
            torch.testing.assert_close(torch.tensor(out.embedding), want, atol=1e-4, rtol=1e-4)


def test_generation_and_embedding_requests_meet_the_other_model(make_embedder, make_scheduler, tokenizer):
    embedder = make_embedder()
    submit(embedder, tokenizer, "g", tokenizer.encode("Hello"), max_new_tokens=4)
    out = run_all(embedder)["g"]["out"]
    assert out.finished_reason.to_json()["status_code"] == 400
    assert out.finished_reason.to_json()["message"] == NOT_GENERATION_MODEL

    generator = make_scheduler()
    generator.handle(TokenizedEmbeddingReqInput("e", "Hello", tokenizer.encode("Hello")))
    out = run_all(generator)["e"]["out"]
    assert out.finished_reason.to_json()["message"] == NOT_EMBEDDING_MODEL and out.embedding is None


def test_one_batch_for_several_prompts_and_abort_mid_chunk(make_embedder, tokenizer):
    sched = make_embedder(chunked_prefill_size=64)
    for i, p in enumerate(PROMPTS):
        sched.handle(TokenizedEmbeddingReqInput(f"b{i}", p, tokenizer.encode(p)))
    outs = sched.step()  # every prompt fits the chunk: one forward embeds them all
    assert sorted(o.rid for o in outs) == ["b0", "b1", "b2"] and all(o.embedding is not None for o in outs)
    assert not sched.has_work()
    sched = make_embedder(chunked_prefill_size=8)
    long_ids = tokenizer.encode(" ".join(PROMPTS * 3))
    sched.handle(TokenizedEmbeddingReqInput("long", None, long_ids))
    assert sched.step() == [] and sched.chunked_req is not None
    sched.abort("long")
    out = run_all(sched)["long"]["out"]
    assert out.finished_reason.to_json()["type"] == "abort" and out.embedding is None
    sched.check_integrity()
