"""sgl.Engine(is_embedding=True).encode on the default model: single, batch, token ids, errors."""

import math

import pytest
import torch

from sgl.runtime.entry.engine import Engine
from sgl.runtime.models.model_config import NOT_GENERATION_MODEL
from sgltest.model_testing import make_forward_batch


@pytest.fixture(scope="module")
def embedder():
    with Engine(is_embedding=True, max_total_tokens=4096, dtype="float32") as eng:
        yield eng


def test_encode_single_batch_and_ids(embedder, tokenizer):
    one = embedder.encode("The capital of France is")
    meta = one["meta_info"]
    assert set(meta) == {"id", "finish_reason", "prompt_tokens"}
    assert meta["finish_reason"] == {"type": "length", "length": 0}
    ids = tokenizer.encode("The capital of France is")
    assert meta["prompt_tokens"] == len(ids)
    assert len(one["embedding"]) == 576 and math.isclose(sum(x * x for x in one["embedding"]), 1.0, rel_tol=1e-5)
    batch = embedder.encode(["The capital of France is", "1, 2, 3,"])
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0]["embedding"] == pytest.approx(one["embedding"], abs=1e-5)
    by_ids = embedder.encode(ids)
    assert by_ids["embedding"] == pytest.approx(one["embedding"], abs=1e-5)
    by_batch_ids = embedder.encode([ids, tokenizer.encode("1, 2, 3,")])
    assert by_batch_ids[1]["embedding"] == pytest.approx(batch[1]["embedding"], abs=1e-5)


def test_encode_equals_the_models_last_hidden_state(embedder, tokenizer, base_runner):
    """The oracle: one plain forward of the same float32 weights (tests/runtime/conftest)."""
    model = base_runner.model
    ids = tokenizer.encode("def add(a, b):\n    return a + b")
    with torch.no_grad():
        fb = make_forward_batch([ids])
        want = torch.nn.functional.normalize(model(fb.input_ids, fb.positions, fb)[-1].float(), dim=-1)
    got = torch.tensor(embedder.encode(ids)["embedding"])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_encode_errors(embedder):
    with pytest.raises(ValueError, match="does not generate"):
        embedder.generate("Hello", {"max_new_tokens": 2})
    assert NOT_GENERATION_MODEL.startswith("This model is served as an embedding")
    with pytest.raises(ValueError, match="input is empty|batch is empty"):
        embedder.encode([])
    with pytest.raises(ValueError, match="input_ids must be in"):
        embedder.encode([10**9])
    info = embedder.get_server_info()
    assert info["kv_integrity"] == "ok" and info["is_embedding"] is True
