"""load_model: build the model class for a ModelConfig directly on the target device and dtype,
then fill it from safetensors, PyTorch .bin files, a GGUF file, or random values ("dummy").

Parameters are created with `torch.empty` under the target device and default dtype, so no
throw-away initialization or second copy is made; checkpoint tensors are copied in one at a time.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Iterable, Iterator, List, Optional, Set, Tuple, Union

import torch
from torch import nn
from tqdm import tqdm

from sgl.runtime.models.model_config import ModelConfig, resolve_dtype, resolve_load_format
from sgl.runtime.models import gguf_weights
from sgl.runtime.models.registry import ModelRegistry

Weights = Iterable[Tuple[str, torch.Tensor]]
DUMMY_SEED = 0
DUMMY_STD = 0.02
_PROGRESS_MIN_TENSORS = 64


def load_model(model_config: ModelConfig, load_format: Optional[str] = None,
               device: Union[str, torch.device] = "cpu", dtype: Union[None, str, torch.dtype] = None) -> nn.Module:
    """The model in eval mode on `device` in `dtype` (default: model_config.dtype)."""
    fmt = resolve_load_format(model_config.model_path, load_format or model_config.load_format)
    device = torch.device(device)
    dtype = resolve_dtype(dtype or model_config.dtype, model_config.hf_config, device.type)
    model_cls, _ = ModelRegistry.resolve_model_cls(model_config.hf_config.architectures)
    with _default_dtype(dtype), device:
        model = model_cls(model_config.hf_config)
    if fmt == "dummy":
        init_dummy_weights(model)
    else:
        weights, count = weight_source(model_config.model_path, fmt, model_config.hf_config)
        loaded = model.load_weights(_progress(weights, count))
        check_all_loaded(model, loaded)
    return model.eval()


def weight_source(path: str, load_format: str, hf_config) -> Tuple[Weights, int]:
    """(iterator of (hf_name, tensor), number of tensors) for a real checkpoint format."""
    if load_format == "gguf":
        return gguf_weights.iterate_gguf_weights(path, hf_config), gguf_weights.gguf_tensor_count(path)
    if load_format == "safetensors":
        files = safetensors_files(path)
        return _iterate_safetensors(files), _count_safetensors(files)
    if load_format == "pt":
        files = _existing(path, sorted(glob.glob(os.path.join(path, "pytorch_model*.bin"))), "pytorch_model*.bin")
        return _iterate_pt(files), 0
    raise ValueError(f"load_format {load_format!r} has no weight files to read")


def safetensors_files(path: str) -> List[str]:
    """The checkpoint's .safetensors files: those of the shard index if there is one."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map object")
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"{index} names missing shard files: {missing}")
        return files
    return _existing(path, sorted(glob.glob(os.path.join(path, "*.safetensors"))), "*.safetensors")


def _existing(path: str, files: List[str], pattern: str) -> List[str]:
    if not files:
        hint = "; use --load-format dummy for random weights" if os.path.isfile(os.path.join(path, "config.json")) else ""
        raise ValueError(f"no {pattern} weight files in {path!r}{hint}")
    return files


def _iterate_safetensors(files: List[str]) -> Iterator[Tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in files:
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def _count_safetensors(files: List[str]) -> int:
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as f:
            total += len(list(f.keys()))
    return total


def _iterate_pt(files: List[str]) -> Iterator[Tuple[str, torch.Tensor]]:
    for file in files:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        yield from state.items()


def _progress(weights: Weights, count: int) -> Weights:
    return tqdm(weights, total=count or None, desc="Loading weights", unit="tensor",
                disable=0 < count < _PROGRESS_MIN_TENSORS)


def check_all_loaded(model: nn.Module, loaded: Set[str]) -> None:
    """ValueError naming the parameters that no checkpoint tensor filled."""
    missing = sorted(name for name, _ in model.named_parameters() if name not in loaded)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"the checkpoint lacks weights for {len(missing)} parameters: {shown}")


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int = DUMMY_SEED, std: float = DUMMY_STD) -> None:
    """Deterministic random weights: matrices ~ N(0, std), norm scales 1, biases 0."""
    generators = {}
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            gen = generators.setdefault(param.device, torch.Generator(device=param.device).manual_seed(seed))
            param.normal_(0.0, std, generator=gen)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
