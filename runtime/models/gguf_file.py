"""Reading GGUF files: detection, a cached reader, and the HF config built from GGUF metadata.

We build the config from the metadata ourselves (a few keys per architecture) instead of going
through transformers' GGUF conversion, which re-parses the whole file (vocabulary included) each
time; the reader here is cached so config, weights and checks share one parse.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from transformers import AutoConfig, PretrainedConfig

GGUF_MAGIC = b"GGUF"

# GGUF `general.architecture` -> (HF model_type, HF architecture)
GGUF_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
}

_REQUIRED = object()


def is_gguf_file(path: str) -> bool:
    """True when `path` is a regular file starting with the GGUF magic bytes."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def open_gguf(path: str):
    """A (cached) `gguf.GGUFReader` for `path`; ValueError when it is not a readable GGUF file."""
    if not is_gguf_file(path):
        raise ValueError(f"{path!r} is not a GGUF file (expected a file starting with {GGUF_MAGIC!r})")
    real = os.path.realpath(path)
    stat = os.stat(real)
    return _open_cached(real, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _open_cached(path: str, mtime_ns: int, size: int):
    # mtime and size are part of the key so a rewritten file is parsed again
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:  # the gguf package raises assorted errors on corrupt files
        raise ValueError(f"cannot read GGUF file {path!r}: {e}") from e


def gguf_field(reader, key: str, default: Any = _REQUIRED) -> Any:
    """The python value of metadata `key`; ValueError when it is missing and no default is given."""
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise ValueError(f"GGUF file lacks the metadata key {key!r}")
        return default
    return field.contents()


def gguf_tensor_names(reader) -> set:
    return {t.name for t in reader.tensors}


def gguf_hf_config(path: str) -> PretrainedConfig:
    """A transformers config (LlamaConfig, Qwen2Config, ...) equivalent to the GGUF metadata."""
    values = gguf_config_dict(open_gguf(path))
    return AutoConfig.for_model(values.pop("model_type"), **values)


def gguf_config_dict(reader) -> dict:
    arch = gguf_field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {sorted(GGUF_ARCHITECTURES)}")
    model_type, hf_arch = GGUF_ARCHITECTURES[arch]
    # llama.cpp writes Mistral checkpoints as "llama"; the name is the only hint left
    if arch == "llama" and "mistral" in str(gguf_field(reader, "general.name", "")).lower():
        model_type, hf_arch = "mistral", "MistralForCausalLM"
    values = {"model_type": model_type, "architectures": [hf_arch]}
    values.update(_shape_values(reader, arch))
    values.update(_token_values(reader))
    values.update(_rope_values(reader, arch))
    names = gguf_tensor_names(reader)
    values["tie_word_embeddings"] = "output.weight" not in names
    if model_type != "qwen2":
        values["attention_bias"] = "blk.0.attn_q.bias" in names
    return values


def _shape_values(reader, arch: str) -> dict:
    def meta(key, default=_REQUIRED):
        return _scalar(gguf_field(reader, f"{arch}.{key}", default), f"{arch}.{key}")

    heads = meta("attention.head_count")
    hidden = meta("embedding_length")
    vocab = meta("vocab_size", None)
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return {
        "hidden_size": hidden,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta("attention.head_count_kv", heads),
        "head_dim": meta("attention.key_length", hidden // heads),
        "max_position_embeddings": meta("context_length"),
        "rms_norm_eps": meta("attention.layer_norm_rms_epsilon"),
        "vocab_size": vocab,
    }


def _scalar(value: Any, key: str) -> Any:
    # some GGUF files store per-layer arrays (e.g. head counts); we only support uniform layers
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"GGUF metadata {key!r} varies per layer ({value}); not supported")
        return value[0]
    return value


def _token_values(reader) -> dict:
    keys = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}
    values = {}
    for hf_key, gguf_key in keys.items():
        value = gguf_field(reader, f"tokenizer.ggml.{gguf_key}", None)
        if value is not None:
            values[hf_key] = value
    return values


def gguf_extra_eos_ids(path: str) -> set:
    """End-of-turn / end-of-message ids that llama.cpp also stops on."""
    reader = open_gguf(path)
    ids = (gguf_field(reader, f"tokenizer.ggml.{k}_token_id", None) for k in ("eos", "eot", "eom"))
    return {i for i in ids if i is not None}


def _rope_values(reader, arch: str) -> dict:
    values = {"rope_theta": float(gguf_field(reader, f"{arch}.rope.freq_base", 10000.0))}
    kind = gguf_field(reader, f"{arch}.rope.scaling.type", "none")
    if kind == "linear":
        values["rope_scaling"] = {"rope_type": "linear", "factor": float(gguf_field(reader, f"{arch}.rope.scaling.factor"))}
    elif kind not in ("none", None):
        raise ValueError(f"GGUF rope scaling type {kind!r} is not supported (supported: none, linear, llama3 rope_freqs)")
    factors = _rope_freq_factors(reader)
    if factors is not None:
        values["rope_freq_factors"] = factors
    return values


def _rope_freq_factors(reader) -> "list | None":
    # llama.cpp stores Llama 3.1+ rope scaling as a per-frequency divisor tensor, not as metadata
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            return [float(x) for x in tensor.data.reshape(-1)]
    return None
