"""Helpers shared by the kernel launchers: when to take the Triton path, and launch-shape arithmetic.

Triton is imported lazily by each kernel module; this module imports only torch so that layers can
ask `use_triton(x)` without paying for (or requiring) Triton on CPU-only installs.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

#: Setting this environment variable to 1 keeps every layer on its torch path (for bisecting).
DISABLE_ENV = "SGL_DISABLE_TRITON_KERNELS"


def interpreting() -> bool:
    """True under `TRITON_INTERPRET=1` (kernels then run on CPU tensors through numpy)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(x: torch.Tensor) -> bool:
    """Whether a layer should dispatch `x` to its Triton kernel: CUDA tensors only, Triton present,
    and not disabled through SGL_DISABLE_TRITON_KERNELS."""
    return x.is_cuda and triton_importable() and os.environ.get(DISABLE_ENV, "0") != "1"


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (Triton block shapes must be powers of two)."""
    return 1 << max(0, int(n) - 1).bit_length()


def check_last_dim_contiguous(name: str, t: torch.Tensor) -> None:
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension, got strides {tuple(t.stride())}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must share one device, got {devices}")


def dot_in_fp32() -> bool:
    """The interpreter's `tl.dot` gives wrong results on bfloat16/fp8 operands (seen with triton
    3.9); kernels upcast dot operands to float32 there. On GPUs the 16-bit operands are kept."""
    return interpreting()


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` input precision: float32 models get true float32 products ("ieee"; Triton's default
    rounds float32 operands to tf32, ~1e-3 relative); 16-bit operands ignore the setting."""
    return "ieee" if dtype == torch.float32 else "tf32"
