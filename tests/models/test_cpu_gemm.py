"""Packed CPU weights (runtime/layers/cpu_gemm.py): the same products as F.linear, every linear layer
and the LM head packed, and a model's logits unchanged by packing."""

import pytest
import torch
import torch.nn.functional as F

from sgl.runtime.layers import cpu_gemm
from sgl.runtime.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sgl.runtime.layers.linear import MergedColumnParallelLinear, RowParallelLinear

pytestmark = pytest.mark.skipif(not cpu_gemm.packing_available(), reason="this torch build has no oneDNN packing")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 5, 16, 200])
def test_packed_linear_equals_f_linear(dtype, rows):
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 40, generator=g).to(dtype)
    b = torch.randn(96, generator=g).to(dtype)
    x = torch.randn(rows, 40, generator=g).to(dtype)
    packed = cpu_gemm.pack(w)
    assert packed is not None
    for bias in (None, b):
        out, ref = cpu_gemm.linear(x, w, bias, packed), F.linear(x, w, bias)
        assert out.dtype == dtype and out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-4, atol=1e-3)
    x3 = x.reshape(1, rows, 40)
    torch.testing.assert_close(cpu_gemm.linear(x3, w, None, packed), F.linear(x3, w), rtol=1e-2, atol=1e-3)
    # a strided input (a slice of a wider activation)
    wide = torch.randn(rows, 80, generator=g).to(dtype)[:, ::2]
    torch.testing.assert_close(cpu_gemm.linear(wide, w, None, packed), F.linear(wide, w), rtol=1e-2, atol=1e-3)


def test_what_is_not_packed():
    assert cpu_gemm.pack(torch.randn(4, 4, dtype=torch.float16)) is None
    assert cpu_gemm.pack(torch.randn(4)) is None
    w = torch.randn(8, 4)
    # an input of another dtype takes F.linear (which then complains as it always did)
    with pytest.raises(RuntimeError):
        cpu_gemm.linear(torch.randn(2, 4, dtype=torch.bfloat16), w, None, cpu_gemm.pack(w))


class _Tiny(torch.nn.Module):
    def __init__(self, tie: bool):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(50, 16)
        self.gate_up = MergedColumnParallelLinear(16, [24, 24], bias=False)
        self.down = RowParallelLinear(24, 16, bias=True)
        self.lm_head = self.embed_tokens if tie else ParallelLMHead(50, 16)
        for p in self.parameters():
            torch.nn.init.normal_(p)

    def forward(self, ids):
        h = self.embed_tokens(ids)
        gu = self.gate_up(h)
        h = self.down(F.silu(gu[:, :24]) * gu[:, 24:])
        return self.lm_head.matmul(h)


@pytest.mark.parametrize("tie", [True, False])
def test_pack_model_packs_linears_and_the_lm_head(tie):
    model = _Tiny(tie).to(torch.bfloat16)
    ids = torch.tensor([1, 7, 42])
    ref = model(ids)
    packed = cpu_gemm.pack_model(model)
    expected = sum(m.weight.numel() * 2 for m in (model.gate_up, model.down, model.lm_head))
    assert packed == expected
    assert all(m.packed_weight is not None for m in (model.gate_up, model.down, model.lm_head))
    if not tie:
        assert model.embed_tokens.packed_weight is None  # only used as an embedding: not packed
    torch.testing.assert_close(model(ids), ref, rtol=1e-2, atol=1e-2)
    cpu_gemm.unpack_model(model)
    assert model.gate_up.packed_weight is None and model.lm_head.packed_weight is None
    assert cpu_gemm.pack_model(model, max_bytes=expected - 1) == 0  # over the budget: nothing packed
    assert model.down.packed_weight is None
