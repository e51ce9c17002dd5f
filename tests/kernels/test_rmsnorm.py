"""RMSNorm (plain and with the fused residual add) vs the oracle and the torch layer."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import ulp_close
from sgl.kernels import reference as R
from sgl.kernels.rmsnorm import rmsnorm
from sgl.runtime.layers.layernorm import RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hidden", [100, 256])
def test_rmsnorm_matches_oracle(device, gen, dtype, hidden):
    x = (torch.randn(5, hidden, generator=gen) * 3).to(dtype).to(device)
    w = torch.randn(hidden, generator=gen).to(dtype).to(device)
    out = rmsnorm(x, w, 1e-5)
    assert out.dtype == dtype and ulp_close(out, R.rmsnorm_ref(x, w, 1e-5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_residual_add(device, gen, dtype):
    hidden = 96
    base = torch.randn(4, 2 * hidden, generator=gen).to(dtype).to(device)
    x = base[:, :hidden]  # strided rows, as a slice of a wider activation
    res = torch.randn(4, hidden, generator=gen).to(dtype).to(device)
    w = torch.randn(hidden, generator=gen).to(dtype).to(device)
    x_before, res_before = x.clone(), res.clone()
    out, summed = rmsnorm(x, w, 1e-6, residual=res)
    ref_out, ref_sum = R.rmsnorm_ref(x, w, 1e-6, residual=res)
    assert ulp_close(summed, ref_sum) and ulp_close(out, ref_out)
    assert torch.equal(x, x_before) and torch.equal(res, res_before)  # inputs untouched


def test_agrees_with_torch_layer_and_promotes_like_it(device, gen):
    layer = RMSNorm(64, eps=1e-5).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, generator=gen))
    x = torch.randn(2, 3, 64, generator=gen).to(torch.bfloat16).to(device)  # fp32 weight, bf16 input
    out = rmsnorm(x, layer.weight, 1e-5)
    want = layer._norm(x)
    assert out.dtype == want.dtype == torch.float32 and out.shape == x.shape
    # the normalised value is rounded to bf16 before the fp32 weight multiplies it: bf16 ulps
    assert torch.allclose(out, want, rtol=4 * torch.finfo(torch.bfloat16).eps, atol=1e-6)


def test_rejects_bad_weight(device):
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(torch.zeros(2, 8, device=device), torch.zeros(7, device=device), 1e-5)
