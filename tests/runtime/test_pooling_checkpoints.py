"""Pooling models loaded from local HF checkpoints (tiny random configs) and run through the
scheduler: reward scores and embeddings equal HF's, chunked and prefix-cached prompts included."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sgl.runtime.executor.model_runner import ModelRunner
from sgl.runtime.ipc.messages import TokenizedEmbeddingReqInput
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs
from sgltest.runtime_helpers import run_all

transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 17, 3, 99, 42, 7, 8, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11], [11, 2, 64], [5, 17, 3, 99, 42, 7, 30]]


def _config(**kw):
    return transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                    pad_token_id=0, **kw)


def _scheduler(path: str, **flags) -> Scheduler:
    sa = ServerArgs(model_path=path, skip_tokenizer_init=True, dtype="float32", device="cpu", log_level="error",
                    max_total_tokens=1024, random_seed=0, **flags)
    runner = ModelRunner(sa)
    assert not runner.model_config.is_generation
    return Scheduler(sa, model_runner=runner)


def _run(sched, prompts, rid):
    for i, ids in enumerate(prompts):
        sched.handle(TokenizedEmbeddingReqInput(f"{rid}{i}", None, ids))
    results = run_all(sched)
    return torch.tensor([results[f"{rid}{i}"]["out"].embedding for i in range(len(prompts))])


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.LlamaForSequenceClassification(_config(num_labels=1)).float().eval()
    path = str(tmp_path_factory.mktemp("reward"))
    hf.save_pretrained(path)
    with torch.no_grad():
        want = torch.cat([hf(torch.tensor([ids])).logits for ids in PROMPTS])
    return path, want


@pytest.mark.parametrize("flags", [{}, {"chunked_prefill_size": 4}])
def test_reward_scores_equal_hf(reward_dir, flags):
    path, want = reward_dir
    sched = _scheduler(path, **flags)
    for round_ in range(2):  # the second round meets the prompts in the prefix cache
        got = _run(sched, PROMPTS, f"r{round_}-")
        assert got.shape == (len(PROMPTS), 1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_mean_pooling_from_sentence_transformers_config(tmp_path):
    torch.manual_seed(0)
    config = _config()
    hf = transformers.LlamaModel(config).float().eval()
    hf.save_pretrained(str(tmp_path))
    os.makedirs(tmp_path / "1_Pooling")
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    sched = _scheduler(str(tmp_path), chunked_prefill_size=4)
    with torch.no_grad():
        want = torch.stack([torch.nn.functional.normalize(hf(torch.tensor([ids])).last_hidden_state[0].mean(0), dim=-1)
                            for ids in PROMPTS])
    for round_ in range(2):
        torch.testing.assert_close(_run(sched, PROMPTS, f"m{round_}-"), want, atol=1e-4, rtol=1e-4)
