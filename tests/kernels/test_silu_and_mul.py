"""SiLU-and-multiply vs the oracle and the torch layer."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import ulp_close
from sgl.kernels import reference as R
from sgl.kernels.silu_and_mul import silu_and_mul
from sgl.runtime.layers.activation import SiluAndMul


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 2 * 50), (2, 3, 2 * 1100)])  # 1100 > one 1024-wide block
def test_silu_and_mul(device, gen, dtype, shape):
    x = (torch.randn(*shape, generator=gen) * 4).to(dtype).to(device)
    out = silu_and_mul(x)
    assert out.shape == shape[:-1] + (shape[-1] // 2,) and out.dtype == dtype
    assert ulp_close(out, R.silu_and_mul_ref(x))
    assert ulp_close(out, SiluAndMul()(x))


def test_rejects_odd_width(device):
    with pytest.raises(ValueError, match="even"):
        silu_and_mul(torch.zeros(2, 5, device=device))
