"""ModelConfig: what the runtime needs to know about a model, from a local HF directory, a GGUF
file, or a config-only directory (`--load-format dummy`; shipped ones are addressable by name,
e.g. `--model-path llama-3.1-8b`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Set

import torch
from transformers import AutoConfig, PretrainedConfig

from sgl.runtime.distributed.partition import balanced_part, shard_heads
from sgl.runtime.layers.rotary import rope_params
from sgl.runtime.models import gguf_file

BUILTIN_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")  # runtime/configs
LOAD_FORMATS = ("auto", "pt", "safetensors", "dummy", "gguf")

_DTYPE_NAMES = {
    "half": torch.float16,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float": torch.float32,
    "float32": torch.float32,
}

# config.json written without `architectures` still names its model_type
_MODEL_TYPE_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                    "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
                    "mixtral": "MixtralForCausalLM"}


# float32 checkpoints of these families run in bf16 on GPUs under dtype "auto": their activations
# overflow float16 (Gemma 2's residual stream grows past 65504)
_FP32_AS_BF16 = {"gemma2"}


# SGLang's words when a generation model is asked for embeddings, and ours for the reverse
NOT_EMBEDDING_MODEL = ("This model does not appear to be an embedding model by default. "
                       "Please add `--is-embedding` when launching the server or try another model.")
NOT_GENERATION_MODEL = ("This model is served as an embedding / reward model (prefill only): it does not "
                        "generate. Use /encode, /classify or /v1/embeddings, or launch without `--is-embedding`.")


def builtin_config_names() -> list:
    if not os.path.isdir(BUILTIN_CONFIG_DIR):
        return []
    return sorted(n for n in os.listdir(BUILTIN_CONFIG_DIR) if os.path.isfile(os.path.join(BUILTIN_CONFIG_DIR, n, "config.json")))


def resolve_builtin_config(name: str) -> Optional[str]:
    """Directory of the shipped config called `name` (e.g. "llama-3.1-8b"), or None."""
    if not name or os.sep in name or name.startswith("."):
        return None
    path = os.path.join(BUILTIN_CONFIG_DIR, name)
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


@dataclass
class ModelConfig:
    model_path: str
    load_format: str  # resolved: "gguf", "safetensors", "pt" or "dummy"
    hf_config: PretrainedConfig
    architecture: str
    context_len: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    dtype: torch.dtype
    eos_token_ids: Set[int] = field(default_factory=set)
    # False for pooling models (embedding / reward) and under --is-embedding: prefill only, served
    # through /encode, /classify and /v1/embeddings
    is_generation: bool = True

    @property
    def is_gguf(self) -> bool:
        return os.path.isfile(self.model_path)

    @classmethod
    def from_server_args(cls, server_args: Any) -> "ModelConfig":
        return cls.load(
            server_args.model_path,
            server_args.load_format,
            context_length=server_args.context_length,
            json_override=server_args.json_model_override_args,
            dtype=server_args.dtype,
            device=server_args.device,
            trust_remote_code=server_args.trust_remote_code,
            allow_longer_context=getattr(server_args, "enable_hip_attention", False),
            is_embedding=getattr(server_args, "is_embedding", False),
        )

    @classmethod
    def load(
        cls,
        model_path: str,
        load_format: str = "auto",
        context_length: Optional[int] = None,
        json_override: str = "{}",
        dtype: str = "auto",
        device: Optional[str] = None,
        trust_remote_code: bool = False,
        allow_longer_context: bool = False,
        is_embedding: bool = False,
    ) -> "ModelConfig":
        """`allow_longer_context`: a `context_length` past the trained window is accepted (HiP
        attention extends the context); otherwise it is a ValueError, as in SGLang, unless
        SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1."""
        path = resolve_model_path(model_path)
        fmt = resolve_load_format(path, load_format)
        hf_config = read_hf_config(path, trust_remote_code)
        _read_sentence_transformers_pooling(path, hf_config)
        apply_overrides(hf_config, json_override)
        if context_length is not None and not allow_longer_context:
            _check_not_longer(hf_config, context_length)
        config = cls._from_hf_config(path, fmt, hf_config, context_length, dtype, device)
        config.is_generation = config.is_generation and not is_embedding
        return config

    @classmethod
    def _from_hf_config(cls, path, fmt, hf_config, context_length, dtype, device) -> "ModelConfig":
        from sgl.runtime.models.registry import ModelRegistry

        from sgl.runtime.models.llama_embedding import PoolingModel

        model_cls, arch = ModelRegistry.resolve_model_cls(hf_config.architectures)
        heads = hf_config.num_attention_heads
        return cls(
            model_path=path,
            load_format=fmt,
            hf_config=hf_config,
            architecture=arch,
            context_len=_context_len(hf_config, context_length),
            num_hidden_layers=hf_config.num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
            head_dim=get_head_dim(hf_config),
            hidden_size=hf_config.hidden_size,
            vocab_size=hf_config.vocab_size,
            dtype=resolve_dtype(dtype, hf_config, device),
            eos_token_ids=_eos_token_ids(path, hf_config),
            is_generation=not issubclass(model_cls, PoolingModel),
        )

    def get_num_kv_heads(self, tp_size: int, tp_rank: int = 0) -> int:
        """KV heads tensor-parallel rank `tp_rank` stores (one, replicated, when there are fewer
        heads than ranks; ranks may differ by one: distributed/partition.py)."""
        if tp_size >= self.num_key_value_heads:
            return 1
        return balanced_part(self.num_key_value_heads, tp_rank, tp_size).size

    def get_num_attention_heads(self, tp_size: int, tp_rank: int = 0) -> int:
        """Query heads rank `tp_rank` computes; ValueError naming --tp-size when the heads cannot be split."""
        return shard_heads(self.num_attention_heads, self.num_key_value_heads, tp_rank, tp_size).q.size


def resolve_model_path(model_path: Optional[str]) -> str:
    """An existing local path: the path itself, or the directory of a shipped config name."""
    if not model_path:
        raise ValueError("model_path is empty: expected a local HF directory, a .gguf file or a built-in config name")
    if os.path.exists(model_path):
        return os.path.abspath(model_path)
    builtin = resolve_builtin_config(model_path)
    if builtin is not None:
        return builtin
    raise ValueError(
        f"model path {model_path!r} does not exist: expected a local HF directory (config.json + weights), "
        f"a .gguf file, or a built-in config name {builtin_config_names()}; model hubs are never contacted"
    )


def resolve_load_format(path: str, load_format: str) -> str:
    """The concrete format for `path`; ValueError when the format does not fit the path."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format {load_format!r} is not supported; choose one of {list(LOAD_FORMATS)}")
    if os.path.isfile(path):
        if not gguf_file.is_gguf_file(path):
            raise ValueError(f"{path!r} is a file but not a GGUF file: expected a .gguf file or a directory with config.json")
        if load_format not in ("auto", "gguf", "dummy"):
            raise ValueError(f"load_format {load_format!r} does not apply to the GGUF file {path!r}")
        return "dummy" if load_format == "dummy" else "gguf"
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"directory {path!r} has no config.json: expected a HF model directory")
    if load_format == "gguf":
        raise ValueError(f"load_format 'gguf' needs a .gguf file, got the directory {path!r}")
    return "safetensors" if load_format == "auto" else load_format


def read_hf_config(path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    if os.path.isfile(path):
        return gguf_file.gguf_hf_config(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, KeyError) as e:
        raise ValueError(f"cannot read {os.path.join(path, 'config.json')}: {e}") from e
    if not getattr(config, "architectures", None):
        model_type = getattr(config, "model_type", None)
        if model_type not in _MODEL_TYPE_ARCH:
            raise ValueError(f"config.json in {path!r} names no architectures and has unknown model_type {model_type!r}")
        config.architectures = [_MODEL_TYPE_ARCH[model_type]]
    return config


def _read_sentence_transformers_pooling(path: str, hf_config: PretrainedConfig) -> None:
    """A sentence-transformers checkpoint names its pooling in 1_Pooling/config.json; mean pooling
    from there becomes `pooling_type` (layers/pooler.py) unless the config already sets one."""
    pooling_file = os.path.join(path, "1_Pooling", "config.json")
    if not os.path.isfile(pooling_file) or getattr(hf_config, "pooling_type", None):
        return
    with open(pooling_file) as f:
        modes = json.load(f)
    if modes.get("pooling_mode_mean_tokens"):
        hf_config.pooling_type = "mean"
    elif modes.get("pooling_mode_lasttoken"):
        hf_config.pooling_type = "last"


def apply_overrides(hf_config: PretrainedConfig, json_override: str) -> None:
    """Merge `--json-model-override-args` into the config (top-level keys replace values)."""
    try:
        overrides = json.loads(json_override or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"json_model_override_args is not valid JSON: {e}") from None
    if not isinstance(overrides, dict):
        raise ValueError("json_model_override_args must be a JSON object")
    theta, _ = rope_params(hf_config)
    for key, value in overrides.items():
        setattr(hf_config, key, value)
    _keep_rope_theta(hf_config, theta)


def _keep_rope_theta(hf_config: PretrainedConfig, theta: float) -> None:
    # transformers 5 replaces the whole rope_parameters dict (theta included) when rope_scaling is set
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_theta") is None and getattr(hf_config, "rope_theta", None) is None:
        params["rope_theta"] = theta


def get_head_dim(hf_config: PretrainedConfig) -> int:
    head_dim = getattr(hf_config, "head_dim", None)
    return head_dim or hf_config.hidden_size // hf_config.num_attention_heads


def resolve_dtype(dtype: "str | torch.dtype", hf_config: PretrainedConfig, device: Optional[str] = None) -> torch.dtype:
    """"auto": on GPU bf16 for bf16 checkpoints (and Gemma 2's float32 ones), else fp16; on CPU bf16 where the CPU computes in
    bf16 natively (AVX512-BF16 or AMX: half the bytes a step reads, about twice fp32's matmul
    speed), else float32 (emulated bf16 is slower than float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    if dtype != "auto":
        raise ValueError(f"dtype {dtype!r} is not supported; choose auto or one of {sorted(_DTYPE_NAMES)}")
    if (device or _default_device()) == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    stored = checkpoint_dtype(hf_config)
    if stored == torch.bfloat16 or (stored == torch.float32 and getattr(hf_config, "model_type", None) in _FP32_AS_BF16):
        return torch.bfloat16
    return torch.float16


def cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def checkpoint_dtype(hf_config: PretrainedConfig) -> Optional[torch.dtype]:
    value = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _context_len(hf_config: PretrainedConfig, override: Optional[int]) -> int:
    if override is not None:
        if int(override) <= 0:
            raise ValueError(f"context_length must be positive, got {override}")
        return int(override)
    value = getattr(hf_config, "max_position_embeddings", None)
    if not value:
        raise ValueError("the model config has no max_position_embeddings; pass --context-length")
    return int(value)


def _check_not_longer(hf_config: PretrainedConfig, override: int) -> None:
    trained = getattr(hf_config, "max_position_embeddings", None)
    if not trained or int(override) <= int(trained):
        return
    if os.environ.get("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN", "").lower() in ("1", "true"):
        return
    raise ValueError(
        f"--context-length {override} is longer than the model's trained window ({trained} tokens): "
        "add --enable-hip-attention, which extends the context without training, or set "
        "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 to accept it with dense attention (quality drops past the window)")


def _eos_token_ids(path: str, hf_config: PretrainedConfig) -> Set[int]:
    ids = _as_id_set(getattr(hf_config, "eos_token_id", None))
    if os.path.isfile(path):
        return ids | gguf_file.gguf_extra_eos_ids(path)
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
        with open(gen_path) as f:
            ids |= _as_id_set(json.load(f).get("eos_token_id"))
    return ids


def _as_id_set(value: Any) -> Set[int]:
    if value is None:
        return set()
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}
