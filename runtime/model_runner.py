"""ModelRunner: load the model, size and own the KV pools, run forwards and return logits.

It turns a ScheduleBatch into a ForwardBatch, runs the model, and computes logits only where they
are needed: the last token of every request, plus the prompt positions whose input logprobs were
requested.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional

import torch

from sgl.runtime.forward_batch import ForwardBatch, ForwardMode
from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
from sgl.runtime.model_config import ModelConfig
from sgl.runtime.models.loader import load_model
from sgl.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

KV_DTYPES = {"fp8_e5m2": "float8_e5m2", "fp8_e4m3": "float8_e4m3fn"}


@dataclass
class LogitsOutput:
    next_token_logits: torch.Tensor  # [bs, vocab] float32
    # per request: logits rows of the prompt positions whose input logprobs were asked for
    input_logits: List[Optional[torch.Tensor]]


class ModelRunner:
    def __init__(self, server_args: ServerArgs, model_config: Optional[ModelConfig] = None, model=None):
        """`model` reuses already-loaded weights (tests and benchmarks build several runners)."""
        self.server_args = server_args
        self.device = server_args.device
        self.model_config = model_config or ModelConfig.from_server_args(server_args)
        self.dtype = self.model_config.dtype
        torch.manual_seed(server_args.random_seed)
        if self.device == "cpu":
            # OpenMP threads spin and collapse when another busy process shares the cores (the
            # tokenizer side, a test client); one thread is steadier on small CPU machines.
            torch.set_num_threads(int(os.environ.get("SGL_CPU_THREADS", "1")))
        if model is None:
            model = load_model(self.model_config, server_args.load_format, self.device, self.dtype)
        self.model = model
        self.model.eval()
        self._init_memory_pool()
        self.attn_backend = self._make_attn_backend()

    # ---- memory -------------------------------------------------------------------------
    def _kv_dtype(self) -> torch.dtype:
        name = self.server_args.kv_cache_dtype
        return self.dtype if name == "auto" else getattr(torch, KV_DTYPES[name])

    def _cell_size(self) -> int:
        mc = self.model_config
        return mc.num_key_value_heads * mc.head_dim * mc.num_hidden_layers * 2 * self._kv_dtype().itemsize

    def profile_max_num_token(self) -> int:
        if self.device == "cuda":
            free, total = torch.cuda.mem_get_info()
            rest = free - total * (1 - self.server_args.mem_fraction_static)
            return int(rest // self._cell_size())
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        by_ram = int(ram * 0.25 // self._cell_size())
        return min(by_ram, 4 * self.model_config.context_len)

    def _init_memory_pool(self) -> None:
        sa = self.server_args
        max_tokens = self.profile_max_num_token()
        if sa.max_total_tokens is not None:
            max_tokens = min(max_tokens, sa.max_total_tokens) if self.device == "cuda" else sa.max_total_tokens
        if max_tokens <= 16:
            raise ValueError(
                f"not enough memory for the KV cache ({max_tokens} tokens); "
                "raise --mem-fraction-static or lower --context-length"
            )
        self.max_total_num_tokens = max_tokens
        ctx = self.model_config.context_len
        req_slots = sa.max_running_requests or max(2048, min(4096, max_tokens * 512 // ctx))
        if self.device == "cpu":
            req_slots = sa.max_running_requests or 256
        mc = self.model_config
        self.req_to_token_pool = ReqToTokenPool(req_slots + 1, ctx + 4, self.device)
        self.token_to_kv_pool = TokenToKVPool(
            max_tokens, self._kv_dtype(), mc.num_key_value_heads, mc.head_dim, mc.num_hidden_layers, self.device
        )
        logger.info("KV pool: %d tokens, %d request slots", max_tokens, req_slots + 1)

    def _make_attn_backend(self):
        name = self.server_args.attention_backend
        if name == "torch_native":
            from sgl.runtime.attention.torch_native import TorchNativeAttnBackend

            return TorchNativeAttnBackend(self)
        if name == "triton":
            try:
                from sgl.runtime.attention.triton_backend import TritonAttnBackend
            except ImportError:
                logger.warning("triton attention backend unavailable; using torch_native")
                from sgl.runtime.attention.torch_native import TorchNativeAttnBackend

                return TorchNativeAttnBackend(self)
            return TritonAttnBackend(self)
        raise ValueError(f"attention backend {name!r} is not available in this build")

    # ---- forward --------------------------------------------------------------------------
    def build_forward_batch(self, batch) -> ForwardBatch:
        dev = self.device
        bs = len(batch.reqs)
        fb = ForwardBatch(
            forward_mode=batch.forward_mode,
            batch_size=bs,
            input_ids=batch.input_ids,
            positions=batch.positions,
            req_pool_indices=torch.tensor(batch.req_pool_indices(), dtype=torch.int64, device=dev),
            seq_lens=torch.tensor(batch.seq_lens, dtype=torch.int64, device=dev),
            out_cache_loc=batch.out_cache_loc,
            req_to_token_pool=self.req_to_token_pool,
            token_to_kv_pool=self.token_to_kv_pool,
            attn_backend=self.attn_backend,
            seq_lens_cpu=list(batch.seq_lens),
            req_pool_indices_cpu=batch.req_pool_indices(),
        )
        if batch.forward_mode.is_extend():
            fb.extend_seq_lens_cpu = list(batch.extend_lens)
            fb.extend_prefix_lens_cpu = list(batch.prefix_lens)
            fb.extend_seq_lens = torch.tensor(batch.extend_lens, dtype=torch.int64, device=dev)
            fb.extend_prefix_lens = torch.tensor(batch.prefix_lens, dtype=torch.int64, device=dev)
            starts = [0]
            for n in batch.extend_lens[:-1]:
                starts.append(starts[-1] + n)
            fb.extend_start_loc = torch.tensor(starts, dtype=torch.int64, device=dev)
        return fb

    @torch.inference_mode()
    def forward(self, batch) -> LogitsOutput:
        fb = self.build_forward_batch(batch)
        self.attn_backend.init_forward_metadata(fb)
        hidden = self.model.forward(fb.input_ids, fb.positions, fb)
        if fb.forward_mode.is_decode():
            return LogitsOutput(self.model.compute_logits(hidden), [None] * fb.batch_size)
        return self._extend_logits(batch, hidden)

    def _extend_logits(self, batch, hidden: torch.Tensor) -> LogitsOutput:
        rows, spans, start = [], [], 0
        for req, pre, ext in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
            first = start + ext - 1
            if req.return_logprob and req.input_token_logprobs is None and not req.is_chunked:
                first = start + max(req.logprob_start_len - pre, 0)
            spans.append((len(rows), start + ext - first))
            rows.extend(range(first, start + ext))
            start += ext
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=hidden.device)])
        last = torch.tensor([a + n - 1 for a, n in spans], device=logits.device)
        inputs = [logits[a : a + n - 1] if n > 1 else None for a, n in spans]
        return LogitsOutput(logits[last], inputs)
