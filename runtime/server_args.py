"""ServerArgs: every runtime flag, with SGLang's names and defaults.

The CLI (`python -m sgl.launch_server`) is generated from this dataclass: each field becomes
`--field-name`; booleans that default to False become `store_true` switches; a field's
`metadata` may carry `choices`, `aliases` and `help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, List, Optional


def _f(default: Any, help: str = "", choices: Optional[list] = None, aliases: tuple = (), nargs=None):
    meta = {"help": help, "choices": choices, "aliases": aliases, "nargs": nargs}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


LOAD_FORMATS = ["auto", "pt", "safetensors", "npcache", "dummy", "gguf", "bitsandbytes", "layered"]
DTYPES = ["auto", "half", "float16", "bfloat16", "float", "float32"]
KV_DTYPES = ["auto", "fp8_e5m2", "fp8_e4m3"]
POLICIES = ["lpm", "random", "fcfs", "dfs-weight"]
ATTENTION_BACKENDS = ["triton", "torch_native", "flashinfer", "hip"]


@dataclass
class ServerArgs:
    # Model and tokenizer
    model_path: Optional[str] = _f(None, "Local HF directory, GGUF file or config dir (dummy). Default: the embedded SmolLM2-135M-Instruct GGUF.")
    tokenizer_path: Optional[str] = _f(None, "Defaults to the model path.")
    tokenizer_mode: str = _f("auto", choices=["auto", "slow"])
    skip_tokenizer_init: bool = _f(False, "Requests send input_ids and receive token_ids.")
    load_format: str = _f("auto", choices=LOAD_FORMATS)
    trust_remote_code: bool = _f(False)
    dtype: str = _f("auto", choices=DTYPES)
    kv_cache_dtype: str = _f("auto", choices=KV_DTYPES)
    quantization: Optional[str] = _f(None)
    context_length: Optional[int] = _f(None, "Override the model's context length.")
    device: Optional[str] = _f(None, "cuda or cpu; default cuda when available.", choices=["cuda", "cpu"])
    served_model_name: Optional[str] = _f(None)
    chat_template: Optional[str] = _f(None, "Built-in template name or a .jinja/.json file.")
    is_embedding: bool = _f(False)
    revision: Optional[str] = _f(None)
    json_model_override_args: str = _f("{}", "JSON merged into the HF config.")

    # HTTP
    host: str = _f("127.0.0.1")
    port: int = _f(30000)
    api_key: Optional[str] = _f(None)

    # Memory and scheduling
    mem_fraction_static: Optional[float] = _f(
        None, "Fraction of GPU memory for weights + KV cache. Default: measured by a profiling forward at the largest batch."
    )
    max_running_requests: Optional[int] = _f(None)
    max_total_tokens: Optional[int] = _f(None, "Force the KV pool size in tokens.")
    chunked_prefill_size: Optional[int] = _f(None, "-1 disables chunked prefill.")
    max_prefill_tokens: int = _f(16384)
    schedule_policy: str = _f("lpm", choices=POLICIES)
    schedule_conservativeness: float = _f(1.0)
    cpu_offload_gb: int = _f(0)
    prefill_only_one_req: bool = _f(False)

    # Other runtime options
    tp_size: int = _f(1, aliases=("--tensor-parallel-size",))
    stream_interval: int = _f(1)
    stream_output: bool = _f(False)
    random_seed: Optional[int] = _f(None)
    constrained_json_whitespace_pattern: Optional[str] = _f(None)
    watchdog_timeout: float = _f(300)
    download_dir: Optional[str] = _f(None)
    base_gpu_id: int = _f(0)

    # Logging
    log_level: str = _f("info")
    log_level_http: Optional[str] = _f(None)
    log_requests: bool = _f(False)
    show_time_cost: bool = _f(False)
    enable_metrics: bool = _f(False)
    decode_log_interval: int = _f(40)
    file_storage_pth: str = _f("sglang_storage")
    enable_cache_report: bool = _f(False)

    # Data parallelism
    dp_size: int = _f(1, aliases=("--data-parallel-size",))
    load_balance_method: str = _f("round_robin", choices=["round_robin", "shortest_queue"])

    # Kernels and backends
    attention_backend: Optional[str] = _f(None, choices=ATTENTION_BACKENDS)
    sampling_backend: Optional[str] = _f(None, choices=["flashinfer", "pytorch"])
    grammar_backend: str = _f("outlines", choices=["outlines", "xgrammar"])

    # Optimization / debug switches
    disable_radix_cache: bool = _f(False)
    disable_jump_forward: bool = _f(False)
    disable_cuda_graph: bool = _f(False)
    disable_cuda_graph_padding: bool = _f(False)
    disable_outlines_disk_cache: bool = _f(False)
    disable_overlap_schedule: bool = _f(False)
    enable_mixed_chunk: bool = _f(False)
    enable_torch_compile: bool = _f(False)
    torch_compile_max_bs: int = _f(32)
    cuda_graph_max_bs: Optional[int] = _f(None)
    cuda_graph_bs: Optional[List[int]] = _f(None, nargs="+")
    enable_nan_detection: bool = _f(False)
    triton_attention_reduce_in_fp32: bool = _f(False)
    triton_attention_num_kv_splits: int = _f(8)
    num_continuous_decode_steps: int = _f(1)
    allow_auto_truncate: bool = _f(False)
    enable_custom_logit_processor: bool = _f(False)
    return_hidden_states: bool = _f(False)
    tool_call_parser: Optional[str] = _f(None, choices=["qwen25", "mistral", "llama3"])
    skip_server_warmup: bool = _f(False)

    def __post_init__(self) -> None:
        if self.model_path is None:
            from sgl.runtime.models.default_model import default_model_path

            self.model_path = default_model_path()
        if self.tokenizer_path is None:
            self.tokenizer_path = self.model_path
        if self.served_model_name is None:
            self.served_model_name = self.model_path
        if self.random_seed is None:
            self.random_seed = random.randint(0, 1 << 30)
        if self.device is None:
            self.device = _default_device()
        if self.chunked_prefill_size is None:
            self.chunked_prefill_size = _default_chunk_size(self.device)
        if self.attention_backend is None:
            self.attention_backend = "torch_native" if self.device == "cpu" else "triton"
        if self.device == "cpu":
            self.disable_cuda_graph = True
        if self.model_path.endswith(".gguf") and self.load_format == "auto":
            self.load_format = "gguf"
        self.check()

    def check(self) -> None:
        """Validate values; every failure is a ValueError naming the flag."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"--{_flag(f.name)} must be one of {choices}, got {value!r}")
        _positive(self, "port", "tp_size", "dp_size", "stream_interval", "max_prefill_tokens", "decode_log_interval")
        if self.mem_fraction_static is not None and not 0.0 < self.mem_fraction_static <= 1.0:
            raise ValueError(f"--mem-fraction-static must be in (0, 1], got {self.mem_fraction_static}")
        if self.schedule_conservativeness <= 0:
            raise ValueError("--schedule-conservativeness must be > 0")
        if self.chunked_prefill_size == 0 or self.chunked_prefill_size < -1:
            raise ValueError("--chunked-prefill-size must be -1 (off) or a positive number of tokens")
        if self.max_total_tokens is not None and self.max_total_tokens < 8:
            raise ValueError("--max-total-tokens must be at least 8")
        if self.max_running_requests is not None and self.max_running_requests < 1:
            raise ValueError("--max-running-requests must be >= 1")
        if self.cuda_graph_max_bs is not None and self.cuda_graph_max_bs < 1:
            raise ValueError("--cuda-graph-max-bs must be >= 1 (or unset: sized from the GPU's memory)")
        if self.cuda_graph_bs is not None and any(b < 1 for b in self.cuda_graph_bs):
            raise ValueError(f"--cuda-graph-bs sizes must be >= 1, got {self.cuda_graph_bs}")
        try:
            overrides = json.loads(self.json_model_override_args)
        except json.JSONDecodeError as e:
            raise ValueError(f"--json-model-override-args is not valid JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise ValueError("--json-model-override-args must be a JSON object")

    # ---- CLI ------------------------------------------------------------------------------
    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(ServerArgs):
            names = [f"--{_flag(f.name)}", *f.metadata.get("aliases", ())]
            kwargs: dict = {"dest": f.name, "help": f.metadata.get("help") or None}
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.type in ("bool", bool) and default is False:
                parser.add_argument(*names, action="store_true", **kwargs)
                continue
            kwargs["default"] = default
            kwargs["type"] = _cli_type(f.type)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if f.metadata.get("nargs"):
                kwargs["nargs"] = f.metadata["nargs"]
            parser.add_argument(*names, **kwargs)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "ServerArgs":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def prepare_server_args(argv: List[str]) -> ServerArgs:
    parser = argparse.ArgumentParser(prog="python -m sgl.launch_server")
    ServerArgs.add_cli_args(parser)
    return ServerArgs.from_cli_args(parser.parse_args(argv))


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _cli_type(type_name: Any):
    text = str(type_name)
    if "float" in text:
        return float
    if "List[int]" in text or "int" in text:
        return int
    return str


def _positive(args: ServerArgs, *names: str) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{_flag(name)} must be positive, got {getattr(args, name)}")


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _default_chunk_size(device: str) -> int:
    if device != "cuda":
        return 2048
    import torch

    total_gb = torch.cuda.get_device_properties(0).total_memory / (1 << 30)
    return 2048 if total_gb < 25 else 8192


@dataclass
class PortArgs:
    """ZeroMQ endpoints that connect the tokenizer manager, scheduler and detokenizer."""

    tokenizer_ipc_name: str
    scheduler_input_ipc_name: str
    detokenizer_ipc_name: str

    @staticmethod
    def init_new() -> "PortArgs":
        import tempfile

        base = tempfile.mkdtemp(prefix="sgl-ipc-")
        return PortArgs(*(f"ipc://{os.path.join(base, n)}" for n in ("tok", "sched", "detok")))
