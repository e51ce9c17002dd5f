"""ServerArgs: every runtime flag, with SGLang's names and defaults.

The CLI (`python -m sgl.launch_server`) is generated from this dataclass: each field becomes
`--field-name`; booleans that default to False become `store_true` switches; a field's
`metadata` carries its one-line `help`, and may carry `choices`, `aliases`, `nargs`,
`unsupported` (values the runtime cannot honour: `check()` refuses them, so the CLI and
`sgl.Engine(**kwargs)` both see the error) and `always` (a switch asking for what the runtime
always does). tests/runtime/test_server_args.py proves every field is read somewhere or refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from sgl.runtime.function_call.formats import PARSER_NAMES as TOOL_CALL_PARSERS


@dataclass(frozen=True)
class Unsupported:
    """Values of a flag the runtime cannot honour; `check()` refuses them, saying `why`.

    `when` picks the refused values (default: any value other than the field's default);
    `examples` are refused values the tests try besides generic non-default ones."""

    why: str
    when: Optional[Callable[[Any], bool]] = None
    examples: tuple = ()


def _f(default: Any, help: str, choices: Optional[list] = None, aliases: tuple = (), nargs=None,
       unsupported: Optional[Unsupported] = None, always: bool = False):
    meta = {"help": help, "choices": choices, "aliases": aliases, "nargs": nargs, "unsupported": unsupported,
            "always": always}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


LOAD_FORMATS = ["auto", "pt", "safetensors", "gguf", "dummy"]
DTYPES = ["auto", "half", "float16", "bfloat16", "float", "float32"]
KV_DTYPES = ["auto", "fp8_e5m2", "fp8_e4m3"]
POLICIES = ["lpm", "random", "fcfs", "dfs-weight"]
ATTENTION_BACKENDS = ["triton", "torch_native", "hip"]
PLANNED_ATTENTION_BACKENDS = ("flashinfer",)
HIP_CUDA_GRAPH_MAX_BS = 32  # the seed fork's metadata-cache batch
_LOCAL_ONLY = "models load from local paths only; sgl never downloads from a model hub"


@dataclass
class ServerArgs:
    # Model and tokenizer
    model_path: Optional[str] = _f(
        None, "Local HF directory, .gguf file, or shipped config name (with --load-format dummy). "
        "Unset: the embedded SmolLM2-135M-Instruct GGUF.")
    tokenizer_path: Optional[str] = _f(None, "Tokenizer directory or .gguf file. Unset: the model path.")
    tokenizer_mode: str = _f("auto", "auto: the fast tokenizer when there is one; slow: the Python one.",
                             choices=["auto", "slow"])
    skip_tokenizer_init: bool = _f(False, "No tokenizer or detokenizer: requests send input_ids and get token ids back.")
    load_format: str = _f("auto", "Weight format: auto (from the path: gguf or safetensors), pt, safetensors, gguf, "
                          "or dummy (random weights, for benchmarks).", choices=LOAD_FORMATS,
                          unsupported=Unsupported("not built; use auto, pt, safetensors, gguf or dummy",
                                                  when=lambda v: v in ("npcache", "bitsandbytes", "layered"),
                                                  examples=("npcache", "bitsandbytes", "layered")))
    trust_remote_code: bool = _f(False, "Let a model directory's own Python code build its config and tokenizer.")
    dtype: str = _f("auto", "Weight and activation dtype. auto: on GPU bfloat16 for bf16 checkpoints, else "
                    "float16; on CPU bfloat16 where the CPU computes it natively (AVX512-BF16, AMX), else float32.", choices=DTYPES)
    kv_cache_dtype: str = _f("auto", "KV cache dtype. auto: the model dtype; fp8_*: one byte per value, twice the tokens.",
                             choices=KV_DTYPES)
    quantization: Optional[str] = _f(
        None, "Online quantization method. Not built: any value is refused (a GGUF file is dequantized as it loads).",
        unsupported=Unsupported("online quantization is not built; GGUF checkpoints are dequantized as they load",
                                examples=("fp8", "awq", "gguf")))
    context_length: Optional[int] = _f(None, "Override the model's context length. Unset: the model config's.")
    device: Optional[str] = _f(None, "cuda or cpu. Unset: cuda when available, else cpu.", choices=["cuda", "cpu"])
    served_model_name: Optional[str] = _f(
        None, "Model id that /v1/models and the metrics report. Unset: the model's own name (a GGUF file's "
        "name less its quantization tag, a directory's name, or the shipped config's name).")
    chat_template: Optional[str] = _f(None, "Built-in template name, .jinja/.json file or Jinja source. "
                                      "Unset: the tokenizer's.")
    is_embedding: bool = _f(False, "Serve a causal LM as an embedding model: prefill only, the last token's "
                            "hidden state L2-normalized (/encode, /v1/embeddings). Pooling architectures "
                            "(LlamaEmbeddingModel, *ForSequenceClassification, ...) need no flag.")
    revision: Optional[str] = _f(None, "Model hub revision. Refused: " + _LOCAL_ONLY + ".",
                                 unsupported=Unsupported(_LOCAL_ONLY))
    json_model_override_args: str = _f("{}", "JSON object merged into the model's HF config.")

    # HTTP
    host: str = _f("127.0.0.1", "HTTP bind address.")
    port: int = _f(30000, "HTTP port.")
    api_key: Optional[str] = _f(None, "Require 'Authorization: Bearer KEY' on every route except /health*.")

    # Memory and scheduling
    mem_fraction_static: Optional[float] = _f(
        None, "GPU memory fraction for weights + KV cache. Unset: measured by a profiling prefill at the largest chunk.")
    max_running_requests: Optional[int] = _f(None, "Most requests running at once. Unset: derived from the KV pool.")
    max_total_tokens: Optional[int] = _f(None, "KV pool size in tokens. Unset: measured from free memory.")
    chunked_prefill_size: Optional[int] = _f(
        None, "Most prompt tokens per prefill chunk; -1 disables chunking. Unset: 8192 on GPUs of 25 GB or more, else 2048.")
    max_prefill_tokens: int = _f(16384, "Token budget of one prefill batch (a longer prompt still runs, alone).")
    schedule_policy: str = _f("lpm", "Waiting-queue order: lpm (longest cached prefix first), dfs-weight, fcfs, random.",
                              choices=POLICIES)
    schedule_conservativeness: float = _f(
        1.0, "Scales the KV reserved for running requests' future tokens; larger admits fewer, retracts less.")
    cpu_offload_gb: int = _f(0, "GB of weights kept in CPU memory. Not built: only 0 is accepted.",
                             unsupported=Unsupported("weight offloading is not built; use 0"))
    prefill_only_one_req: bool = _f(False, "Admit at most one new request per prefill batch.")

    # Other runtime options
    tp_size: int = _f(1, "Tensor-parallel degree: this many ranks (one scheduler process each, on CPU or one GPU "
                      "each) split every layer's weights and run each forward together (docs/parallel.md).",
                      aliases=("--tensor-parallel-size",))
    stream_interval: int = _f(1, "Send a stream event every N generated tokens.")
    stream_output: bool = _f(False, "Stream incremental segments. Not built: streams carry the cumulative text; refused.",
                             unsupported=Unsupported("streams carry the cumulative text (SGLang v0.4 behaviour)"))
    random_seed: Optional[int] = _f(None, "Seed of the random number generators. Unset: a random one.")
    constrained_json_whitespace_pattern: Optional[str] = _f(
        None, "Regex of the whitespace allowed between JSON tokens under json_schema. Unset: an optional space.")
    watchdog_timeout: float = _f(300, "Seconds one scheduler step (a forward batch) may run; past that the scheduler "
                                 "exits and so does the server (exit code 1).")
    download_dir: Optional[str] = _f(None, "Model hub download directory. Refused: " + _LOCAL_ONLY + ".",
                                     unsupported=Unsupported(_LOCAL_ONLY))
    base_gpu_id: int = _f(0, "First GPU to use. Only 0 is accepted: pick GPUs with CUDA_VISIBLE_DEVICES.",
                          unsupported=Unsupported("the runtime uses the first visible GPU; pick it with CUDA_VISIBLE_DEVICES"))

    # Logging
    log_level: str = _f("info", "Log level of every logger: debug, info, warning or error.")
    log_level_http: Optional[str] = _f(None, "Uvicorn's log level. Unset: --log-level.")
    log_requests: bool = _f(False, "Log every request's input and output. Not built yet: refused.",
                            unsupported=Unsupported("request logging is not built yet"))
    show_time_cost: bool = _f(False, "Log timing marks. Not built yet: refused.",
                              unsupported=Unsupported("timing marks are not built yet"))
    enable_metrics: bool = _f(False, "Serve Prometheus metrics at /metrics.")
    decode_log_interval: int = _f(40, "Log a 'Decode batch.' line every N decode steps.")
    file_storage_pth: str = _f("sglang_storage", "Directory for /v1/files uploads. Only the default is accepted: "
                               "/v1/files is not served.", unsupported=Unsupported("the /v1/files API is not served"))
    enable_cache_report: bool = _f(False, "Report cached prompt tokens in OpenAI usage (prompt_tokens_details).")

    # Data parallelism
    dp_size: int = _f(1, "Data-parallel replicas in one launch: this many schedulers (each with --tp-size ranks and "
                      "its own KV cache), requests dispatched among them (docs/parallel.md).",
                      aliases=("--data-parallel-size",))
    load_balance_method: str = _f(
        "round_robin", "How --dp-size replicas share requests: round_robin, or shortest_queue (the replica with the "
        "fewest requests in flight).", choices=["round_robin", "shortest_queue"])

    # Multi-node tensor parallelism
    dist_init_addr: Optional[str] = _f(
        None, "HOST:PORT where the tensor-parallel ranks meet (torch.distributed's TCP rendezvous, served by rank 0's "
        "node; every node must reach it). Needed with --nnodes > 1. Unset: a free port on 127.0.0.1.",
        aliases=("--nccl-init-addr",))
    nnodes: int = _f(1, "Machines the tensor-parallel ranks are spread over; each runs tp_size / nnodes of them.")
    node_rank: int = _f(0, "This machine's index among the --nnodes. Node 0 serves HTTP and runs rank 0; the others "
                        "run only their ranks.")

    # Kernels and backends
    attention_backend: Optional[str] = _f(
        None, "Attention kernels: triton (GPU), torch_native, or hip (HiP sparse attention, the same as "
        "--enable-hip-attention). Unset: triton on GPU, torch_native on CPU. flashinfer is planned.",
        choices=ATTENTION_BACKENDS,
        unsupported=Unsupported("it is planned but not built yet; use triton (GPU), torch_native or hip",
                                when=lambda v: v in PLANNED_ATTENTION_BACKENDS, examples=PLANNED_ATTENTION_BACKENDS))
    enable_hip_attention: bool = _f(
        False, "HiP attention (hierarchically pruned sparse attention, docs/hip.md): long contexts in sub-quadratic "
        "time, and --context-length past the model's trained window.")
    hip_attention_config: Optional[str] = _f(
        None, "HiP configuration: a preset (3K, 5K, 16K-shallow), a JSON object or a JSON file. Unset: 3K.")
    enable_hip_offload: bool = _f(
        False, "HiP KV offloading: K/V of every layer in pinned host memory, per-layer GPU caches for the pruning "
        "and the sparse attention (docs/hip.md). Needs --enable-hip-attention; --max-total-tokens is then bounded "
        "by host memory.")
    hip_max_mask_cache_token_size: int = _f(
        131072, "With --enable-hip-offload: tokens of keys each layer's GPU mask cache holds (x2 for HiP's dense layers).")
    hip_max_sa_cache_token_size: int = _f(
        16384, "With --enable-hip-offload: tokens of keys and values each layer's GPU sparse-attention cache holds "
        "(x2 for HiP's dense layers).")
    sampling_backend: Optional[str] = _f(
        None, "Sampling kernels: pytorch. Unset: pytorch. flashinfer sampling is not built yet.", choices=["pytorch"],
        unsupported=Unsupported("flashinfer sampling is not built yet; use pytorch",
                                when=lambda v: v == "flashinfer", examples=("flashinfer",)))
    grammar_backend: str = _f(
        "outlines", "Constrained-decoding engine: outlines (built in) or xgrammar (needs the xgrammar package; adds EBNF).",
        choices=["outlines", "xgrammar"],
        unsupported=Unsupported("it needs the xgrammar package (pip install xgrammar); the default outlines backend "
                                "is built in", when=lambda v: v == "xgrammar" and not _installed("xgrammar")))

    # Optimization / debug switches
    disable_radix_cache: bool = _f(False, "Turn off prefix caching.")
    disable_jump_forward: bool = _f(False, "Decode text a grammar forces token by token instead of jumping over it.")
    disable_cuda_graph: bool = _f(False, "Decode without CUDA graphs.")
    disable_cuda_graph_padding: bool = _f(False, "Replay CUDA graphs only for batch sizes captured exactly.")
    disable_outlines_disk_cache: bool = _f(
        False, "Keep compiled grammars off the disk (always so: they are cached in memory only).", always=True)
    disable_overlap_schedule: bool = _f(False, "Process each step before launching the next (no overlap scheduler).")
    enable_mixed_chunk: bool = _f(False, "Run the running requests' decode step in the same forward as a prefill.")
    enable_torch_compile: bool = _f(False, "Compile the CUDA-graph decode with TorchInductor.")
    torch_compile_max_bs: int = _f(32, "Largest decode batch --enable-torch-compile compiles.")
    cuda_graph_max_bs: Optional[int] = _f(None, "Largest captured decode batch. Unset: from the GPU's memory (32 with "
                                          "HiP attention, which captures a graph per refresh state).")
    cuda_graph_bs: Optional[List[int]] = _f(None, "Decode batch sizes to capture. Unset: 1, 2, 4, 8, then steps of 8 "
                                            "up to the max.", nargs="+")
    enable_nan_detection: bool = _f(False, "Replace NaN logits before sampling, with a warning.")
    triton_attention_reduce_in_fp32: bool = _f(
        False, "Reduce Triton attention in float32 (always so: the kernels accumulate in float32).", always=True)
    triton_attention_num_kv_splits: int = _f(8, "KV splits of the Triton decode-attention kernel for large batches "
                                             "(small batches get more, up to 64, so one long request fills the GPU).")
    num_continuous_decode_steps: int = _f(
        1, "Decode steps per scheduling round. Not built: only 1 is accepted.",
        unsupported=Unsupported("the scheduler runs one decode step per round; use 1"))
    allow_auto_truncate: bool = _f(False, "Truncate over-long prompts. Not built: they get a 400; refused.",
                                   unsupported=Unsupported("over-long prompts are rejected with a 400"))
    enable_custom_logit_processor: bool = _f(False, "Accept custom logit processors in requests. Not built: refused.",
                                             unsupported=Unsupported("custom logit processors are not built"))
    return_hidden_states: bool = _f(False, "Return hidden states in meta_info. Not built: refused.",
                                    unsupported=Unsupported("hidden states are not returned yet"))
    tool_call_parser: Optional[str] = _f(
        None, "How the model writes tool calls in /v1/chat/completions (qwen25, mistral, llama3, json). "
        "Default: read from the chat template; sgl's default tools block asks for qwen25's form.",
        choices=list(TOOL_CALL_PARSERS))
    skip_server_warmup: bool = _f(False, "Announce readiness without sending the warm-up request.")

    def __post_init__(self) -> None:
        if self.model_path is None:
            from sgl.runtime.models.default_model import default_model_path

            self.model_path = default_model_path()
        if self.tokenizer_path is None:
            self.tokenizer_path = self.model_path
        if self.served_model_name is None:
            self.served_model_name = default_served_model_name(self.model_path)
        if self.random_seed is None:
            self.random_seed = random.randint(0, 1 << 30)
        if self.device is None:
            self.device = _default_device()
        if self.chunked_prefill_size is None:
            self.chunked_prefill_size = _default_chunk_size(self.device)
        if self.enable_hip_attention:
            if self.attention_backend not in (None, "hip"):
                raise ValueError(f"--enable-hip-attention selects the hip attention backend; it cannot be combined "
                                 f"with --attention-backend {self.attention_backend}")
            self.attention_backend = "hip"
        self.enable_hip_attention = self.attention_backend == "hip"
        if self.enable_hip_attention and self.cuda_graph_max_bs is None and self.cuda_graph_bs is None:
            # HiP captures one graph per refresh state: 4 per batch size with three stages
            self.cuda_graph_max_bs = HIP_CUDA_GRAPH_MAX_BS
        if self.attention_backend is None:
            self.attention_backend = "torch_native" if self.device == "cpu" else "triton"
        if self.sampling_backend is None:
            # SGLang prefers flashinfer when installed; its sampling is not built here
            self.sampling_backend = "pytorch"
        if self.device == "cpu":
            self.disable_cuda_graph = True
        if self.model_path.endswith(".gguf") and self.load_format == "auto":
            self.load_format = "gguf"
        self.check()

    def check(self) -> None:
        """Validate values; every failure is a ValueError naming the flag."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _refuse_unsupported(f, value)  # before the choices: a planned value gets its own message
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise ValueError(f"--{_flag(f.name)} must be one of {choices}, got {value!r}")
        _positive(self, "port", "stream_interval", "max_prefill_tokens", "decode_log_interval", "watchdog_timeout",
                  "tp_size", "dp_size", "nnodes")
        self._check_parallel()
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
        if self.enable_hip_offload:
            if not self.enable_hip_attention:
                raise ValueError("--enable-hip-offload offloads HiP attention's KV; add --enable-hip-attention")
            if os.environ.get("DEBUG_ONLINE", "0") == "1":
                raise ValueError("DEBUG_ONLINE=1 (the online cache update inside the kernels) is not built; "
                                 "--enable-hip-offload updates its caches after each refreshing layer (unset DEBUG_ONLINE)")
        _positive(self, "hip_max_mask_cache_token_size", "hip_max_sa_cache_token_size")
        if self.hip_attention_config is not None:
            if not self.enable_hip_attention:
                raise ValueError("--hip-attention-config applies to HiP attention; add --enable-hip-attention")
            from sgl.runtime.attention.hip.config import load_hip_config

            load_hip_config(self.hip_attention_config)
        try:
            overrides = json.loads(self.json_model_override_args)
        except json.JSONDecodeError as e:
            raise ValueError(f"--json-model-override-args is not valid JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise ValueError("--json-model-override-args must be a JSON object")

    def _check_parallel(self) -> None:
        tp = self.tp_size
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in [0, --nnodes {self.nnodes}), got {self.node_rank}")
        if tp % self.nnodes:
            raise ValueError(f"--tp-size {tp} must be a multiple of --nnodes {self.nnodes}: every node runs "
                             "tp_size / nnodes ranks")
        if self.nnodes > 1 and self.dist_init_addr is None:
            raise ValueError(f"--nnodes {self.nnodes} needs --dist-init-addr HOST:PORT, an address of node 0 "
                             "that every node reaches")
        if self.dist_init_addr is not None:
            parse_host_port(self.dist_init_addr)
        if tp > 1 and self.enable_hip_attention:
            raise ValueError(f"--tp-size {tp} is not supported with HiP attention (--enable-hip-attention or "
                             "--attention-backend hip) yet: its mask cache and KV offloading are built for one rank")
        if self.dp_size > 1 and self.nnodes > 1:
            raise ValueError(f"--dp-size {self.dp_size} with --nnodes {self.nnodes} is not supported: data-parallel "
                             "replicas run on one machine (put a router in front of several servers instead)")
        if tp * self.dp_size > 1 and self.device == "cuda":
            _check_gpu_count(tp // self.nnodes * self.dp_size)

    # ---- CLI ------------------------------------------------------------------------------
    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """One option per field. Choices are shown but checked by `check()`, not argparse, so a
        refused value gets the same message from the CLI as from `sgl.Engine(**kwargs)`."""
        for f in dataclasses.fields(ServerArgs):
            names = [f"--{_flag(f.name)}", *f.metadata.get("aliases", ())]
            kwargs: dict = {"dest": f.name, "help": f.metadata["help"] + " (default: %(default)s)"}
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.type in ("bool", bool) and default is False:
                parser.add_argument(*names, action="store_true", **kwargs)
                continue
            kwargs["default"] = default
            kwargs["type"] = _cli_type(f.type)
            if f.metadata.get("choices"):
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sgl.launch_server",
                                     description="Serve a model over HTTP (SGLang's native and OpenAI APIs).")
    ServerArgs.add_cli_args(parser)
    return parser


def prepare_server_args(argv: List[str]) -> ServerArgs:
    return ServerArgs.from_cli_args(make_parser().parse_args(argv))


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _refuse_unsupported(f: dataclasses.Field, value: Any) -> None:
    rule: Optional[Unsupported] = f.metadata.get("unsupported")
    if rule is None:
        return
    refused = rule.when(value) if rule.when is not None else value != f.default
    if refused:
        shown = "" if value is True else f" {value}"
        raise ValueError(f"--{_flag(f.name)}{shown} is not supported: {rule.why}")


# A quantization tag at the end of a GGUF file name ("Model.Q4_1", "model-q4_k_m", "Model.f16").
_GGUF_QUANT_TAG = re.compile(r"[.\-_](?:I?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)


def default_served_model_name(model_path: str) -> str:
    """The model's own name: a GGUF file's name less its extension and quantization tag
    ("SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct"), a directory's base name, or
    the path as given (a shipped config name such as "llama-3.1-8b")."""
    if os.path.isfile(model_path):
        stem = os.path.basename(model_path)
        stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
        return _GGUF_QUANT_TAG.sub("", stem) or stem
    if os.path.isdir(model_path):
        return os.path.basename(os.path.abspath(model_path))
    return model_path


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


def parse_host_port(addr: str) -> "tuple[str, int]":
    """"host:port" (an IPv6 host in brackets) -> (host, port); ValueError naming --dist-init-addr."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--dist-init-addr must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def _check_gpu_count(needed: int) -> None:
    import torch

    found = torch.cuda.device_count()
    if found < needed:
        raise ValueError(f"--tp-size x --dp-size needs {needed} GPUs on this node (one per rank), found {found}")


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
    """ZeroMQ endpoints that connect the tokenizer manager, scheduler and detokenizer, and the
    torch.distributed rendezvous of the tensor-parallel ranks (None at tp_size 1). With
    --dp-size N there are N scheduler inputs; a replica's processes get `for_replica(d, ...)`,
    whose `scheduler_input_ipc_name` and rendezvous are that replica's."""

    tokenizer_ipc_name: str
    scheduler_input_ipc_name: str
    detokenizer_ipc_name: str
    dist_init_method: Optional[str] = None
    scheduler_input_ipc_names: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.scheduler_input_ipc_names:
            self.scheduler_input_ipc_names = [self.scheduler_input_ipc_name]

    @staticmethod
    def init_new(dp_size: int = 1) -> "PortArgs":
        """Fresh ipc:// names (one scheduler input per data-parallel replica)."""
        import tempfile

        base = tempfile.mkdtemp(prefix="sgl-ipc-")
        tok, detok = (f"ipc://{os.path.join(base, n)}" for n in ("tok", "detok"))
        inputs = [f"ipc://{os.path.join(base, 'sched' if dp_size == 1 else f'sched{d}')}" for d in range(dp_size)]
        return PortArgs(tok, inputs[0], detok, None, inputs)

    def for_replica(self, dp_rank: int, rendezvous: Optional["tuple[str, int]"]) -> "PortArgs":
        """The ports of replica `dp_rank`, whose TP ranks meet at `rendezvous` (host, port)."""
        url = None
        if rendezvous is not None:
            host, port = rendezvous
            url = f"tcp://{'[' + host + ']' if ':' in host else host}:{port}"
        return dataclasses.replace(self, scheduler_input_ipc_name=self.scheduler_input_ipc_names[dp_rank],
                                   dist_init_method=url)
