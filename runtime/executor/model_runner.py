"""ModelRunner: load the model, size and own the KV pools, run forwards and return logits.

It turns a ScheduleBatch into a ForwardBatch, runs the model, and computes logits only where they
are needed: the last token of every request, plus the prompt positions whose input logprobs were
requested.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from sgl.runtime.attention.base import CudaGraphAttentionBackend, create_attention_backend
from sgl.runtime.distributed.parallel_state import get_tp_group, min_over_ranks
from sgl.runtime.executor.forward_batch import ForwardBatch, ForwardMode
from sgl.runtime.executor.forward_plan import ForwardPlan, extend_logit_rows
from sgl.runtime.executor.host_to_device import to_device
from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
from sgl.runtime.executor.cpu_threads import cpu_threads
from sgl.runtime.layers.pooler import Pooler, pool_rows, pooling_type_of
from sgl.runtime.models.llama_embedding import PoolingModel
from sgl.runtime.models.model_config import ModelConfig
from sgl.runtime.models.loader import load_model
from sgl.runtime.server_args import ServerArgs
from sgl.runtime.executor.timing import BusyTimer
from sgl.runtime.layers.attention import check_backend_supports

logger = logging.getLogger(__name__)

# Without --max-running-requests the GPU runs at most this many requests at once; their sampling
# buffers are reserved when the KV pool is sized.
DEFAULT_GPU_MAX_RUNNING = 1024
GPU_RESERVE_BYTES = 1 << 30  # CUDA graphs, allocator fragmentation, NCCL
KV_DTYPES = {"fp8_e5m2": "float8_e5m2", "fp8_e4m3": "float8_e4m3fn"}
#: default --max-running-requests with --enable-hip-offload
OFFLOAD_MAX_RUNNING = 32


@dataclass
class LogitsOutput:
    next_token_logits: torch.Tensor  # [bs, vocab] float32
    # per request: logits rows of the prompt positions whose input logprobs were asked for
    input_logits: List[Optional[torch.Tensor]]

    def split(self, n: int) -> Tuple["LogitsOutput", "LogitsOutput"]:
        """The first `n` requests' logits and the rest's (a mixed batch's prefill and decode parts)."""
        return (LogitsOutput(self.next_token_logits[:n], self.input_logits[:n]),
                LogitsOutput(self.next_token_logits[n:], self.input_logits[n:]))


class ModelRunner:
    def __init__(self, server_args: ServerArgs, model_config: Optional[ModelConfig] = None, model=None):
        """`model` reuses already-loaded weights (tests and benchmarks build several runners)."""
        self.server_args = server_args
        self.device = server_args.device
        self.model_config = model_config or ModelConfig.from_server_args(server_args)
        self.dtype = self.model_config.dtype
        # this process's tensor-parallel rank: the model is built with its share of the weights
        self.tp = get_tp_group()
        if self.tp.size != server_args.tp_size:
            raise ValueError(f"--tp-size {server_args.tp_size}: this process is not a rank of a tensor-parallel group "
                             f"of that size (it has {self.tp.size}); the server and sgl.Engine start one process "
                             "per rank, a runner built on its own (benchmarks, tests) runs at --tp-size 1")
        self.num_kv_heads = self.model_config.get_num_kv_heads(self.tp.size, self.tp.rank)
        self.plan_sender = None  # rank 0 of several: sends every forward plan to the other ranks
        torch.manual_seed(server_args.random_seed)
        if self.device == "cpu":
            torch.set_num_threads(cpu_threads())  # see executor/cpu_threads.py
        if model is None:
            model = load_model(self.model_config, server_args.load_format, self.device, self.dtype)
        self.model = model
        self.model.eval()
        self.pooler = None if self.model_config.is_generation else pooler_of(self.model)
        if self.device == "cpu":
            from sgl.runtime.layers.cpu_gemm import pack_model

            pack_model(self.model)  # oneDNN-packed weights: see layers/cpu_gemm.py
        # The backend first: the memory profile runs a prefill through it.
        self.attn_backend = self._make_attn_backend()
        self._init_memory_pool()
        if self.device == "cuda":
            # The prefill above built the attention kernels for batches without cached tokens;
            # build those for batches with some now, not on the first prefix hit while serving.
            throwaway_extend(self, [16], [16])
        self.busy_timer = BusyTimer(self.device)
        self.cuda_graph_runner = self._make_cuda_graph_runner()
        if self.tp.size > 1 and self.tp.rank == 0:
            from sgl.runtime.distributed.plan_channel import PlanSender

            self.plan_sender = PlanSender(self.tp, self.req_to_token_pool)

    # ---- memory -------------------------------------------------------------------------
    def _kv_dtype(self) -> torch.dtype:
        name = self.server_args.kv_cache_dtype
        return self.dtype if name == "auto" else getattr(torch, KV_DTYPES[name])

    def _cell_size(self) -> int:
        mc = self.model_config
        return self.num_kv_heads * mc.head_dim * mc.num_hidden_layers * 2 * self._kv_dtype().itemsize

    def profile_max_num_token(self) -> int:
        if self.device == "cuda":
            return self._profile_gpu_tokens()
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        by_ram = int(ram * 0.25 // self._cell_size())
        return min(by_ram, 4 * self.model_config.context_len)

    def _profile_gpu_tokens(self) -> int:
        """KV tokens that fit after the weights, leaving room for the largest forward.

        With `--mem-fraction-static` the SGLang formula applies. Otherwise one profiling prefill
        at the largest chunk measures the activation peak, and the decode sampling buffers of the
        largest running batch are reserved on top, so the default start works on any card.
        """
        free, total = torch.cuda.mem_get_info()
        fraction = self.server_args.mem_fraction_static
        if fraction is not None:
            return int((free - total * (1 - fraction)) // self._cell_size())
        peak = profile_prefill_peak(self, self._largest_prefill())
        bs = self.server_args.max_running_requests or DEFAULT_GPU_MAX_RUNNING
        sampling = bs * self.model_config.vocab_size * 4 * 4  # logits, probs, sort values and ids
        free, total = torch.cuda.mem_get_info()
        reserve = peak + sampling + GPU_RESERVE_BYTES + int(0.02 * total)
        logger.info("memory profile: free %.1f GiB, prefill peak %.2f GiB, reserve %.2f GiB",
                    free / 2**30, peak / 2**30, reserve / 2**30)
        return int((free - reserve) // self._cell_size())

    def _largest_prefill(self) -> int:
        sa = self.server_args
        # without chunking a batch of several requests can reach max_prefill_tokens
        return sa.chunked_prefill_size if sa.chunked_prefill_size and sa.chunked_prefill_size > 0 else sa.max_prefill_tokens

    def _host_kv_tokens(self) -> int:
        """KV tokens an offloaded pool may hold: 90% of the host memory available now."""
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return int(avail * 0.9 // self._cell_size())

    def _offload_max_tokens(self) -> int:
        sa = self.server_args
        by_host = self._host_kv_tokens()
        if sa.max_total_tokens is not None:
            if sa.max_total_tokens > by_host:
                raise ValueError(
                    f"--max-total-tokens {sa.max_total_tokens} needs {sa.max_total_tokens * self._cell_size() / 2**30:.1f} "
                    f"GiB of host memory for the offloaded KV cache; {by_host} tokens fit in the host memory available "
                    "now (use --kv-cache-dtype fp8_e5m2 for twice as many)")
            return sa.max_total_tokens
        # unset: two requests of the full context (pinning all of the host's memory would starve it)
        return min(by_host, 2 * self.model_config.context_len + self._largest_prefill())

    def _init_memory_pool(self) -> None:
        sa = self.server_args
        if sa.enable_hip_offload:
            self._init_offloaded_pool()
            return
        max_tokens = self.profile_max_num_token()
        if sa.max_total_tokens is not None:
            max_tokens = min(max_tokens, sa.max_total_tokens) if self.device == "cuda" else sa.max_total_tokens
        # rank 0 allocates the KV slots of every rank: the pool is the size all of them can hold
        max_tokens = min_over_ranks(max_tokens)
        if max_tokens <= 16:
            raise ValueError(
                f"not enough GPU memory for the KV cache ({max_tokens} tokens) after the weights: lower "
                "--chunked-prefill-size or --max-running-requests, set --mem-fraction-static, or use a smaller --dtype"
            )
        self.max_total_num_tokens = max_tokens
        ctx = self.model_config.context_len
        req_slots = self._req_slots(max_tokens)
        mc = self.model_config
        self.req_to_token_pool = ReqToTokenPool(req_slots + 1, ctx + 4, self.device)
        self.token_to_kv_pool = TokenToKVPool(
            max_tokens, self._kv_dtype(), self.num_kv_heads, mc.head_dim, mc.num_hidden_layers, self.device
        )
        logger.info("KV pool: %d tokens, %d request slots", max_tokens, req_slots + 1)

    def _req_slots(self, max_tokens: int) -> int:
        sa = self.server_args
        if self.device == "cpu":
            return sa.max_running_requests or 256
        ctx = self.model_config.context_len
        return sa.max_running_requests or min(max(2048, min(4096, max_tokens * 512 // ctx)), DEFAULT_GPU_MAX_RUNNING)

    def _init_offloaded_pool(self) -> None:
        """HiP KV offloading: the pool in host memory, GPU caches per layer (runtime/mem/hip_offload.py)."""
        from sgl.runtime.mem.hip_offload import HipOffloadKVPool

        sa, mc = self.server_args, self.model_config
        max_tokens = self._offload_max_tokens()
        if max_tokens <= 16:
            raise ValueError(f"not enough host memory for an offloaded KV cache ({max_tokens} tokens)")
        self.max_total_num_tokens = max_tokens
        # a request slot holds a row of context-length int32s (4 MiB at 1M tokens): few by default
        req_slots = sa.max_running_requests or OFFLOAD_MAX_RUNNING
        self.req_to_token_pool = ReqToTokenPool(req_slots + 1, mc.context_len + 4, self.device)
        dense = set(self.attn_backend.config.dense_layers)
        self.token_to_kv_pool = HipOffloadKVPool(
            max_tokens, self._kv_dtype(), mc.num_key_value_heads, mc.head_dim, mc.num_hidden_layers, self.device,
            sa.hip_max_mask_cache_token_size, sa.hip_max_sa_cache_token_size, dense_layers=dense)
        pool = self.token_to_kv_pool
        logger.info("HiP offload: KV pool of %d tokens in host memory (%.2f GiB), GPU caches %.2f GiB, %d request slots",
                    max_tokens, pool.host_bytes() / 2**30, pool.gpu_bytes() / 2**30, req_slots + 1)

    def _make_attn_backend(self):
        backend = create_attention_backend(self.server_args.attention_backend, self)
        check_backend_supports(backend, self.model, self.server_args.attention_backend)
        return backend

    def _make_cuda_graph_runner(self):
        sa = self.server_args
        if not self.model_config.is_generation:
            return None  # pooling models never decode
        if self.device != "cuda" or sa.disable_cuda_graph:
            if sa.enable_torch_compile:
                logger.warning("--enable-torch-compile compiles the CUDA-graph decode path; ignored without CUDA graphs")
            return None
        if not isinstance(self.attn_backend, CudaGraphAttentionBackend):
            logger.info("attention backend %s has no CUDA-graph support; decoding eagerly", sa.attention_backend)
            return None
        from sgl.runtime.executor.cuda_graph_runner import CudaGraphRunner

        return CudaGraphRunner(self)

    # ---- forward --------------------------------------------------------------------------
    def build_forward_batch(self, plan: ForwardPlan) -> ForwardBatch:
        dev = self.device
        fb = ForwardBatch(
            forward_mode=plan.forward_mode,
            batch_size=plan.batch_size,
            input_ids=plan.input_ids,
            positions=plan.positions,
            req_pool_indices=to_device(plan.req_pool_indices, torch.int64, dev),
            seq_lens=to_device(plan.seq_lens, torch.int64, dev),
            out_cache_loc=plan.out_cache_loc,
            req_to_token_pool=self.req_to_token_pool,
            token_to_kv_pool=self.token_to_kv_pool,
            attn_backend=self.attn_backend,
            seq_lens_cpu=list(plan.seq_lens),
            req_pool_indices_cpu=list(plan.req_pool_indices),
        )
        if plan.forward_mode.is_extend():
            fb.extend_seq_lens_cpu = list(plan.extend_lens)
            fb.extend_prefix_lens_cpu = list(plan.prefix_lens)
            fb.extend_seq_lens = to_device(plan.extend_lens, torch.int64, dev)
            fb.extend_prefix_lens = to_device(plan.prefix_lens, torch.int64, dev)
            starts = [0]
            for n in plan.extend_lens[:-1]:
                starts.append(starts[-1] + n)
            fb.extend_start_loc = to_device(starts, torch.int64, dev)
            fb.num_decode_reqs = plan.num_decode_reqs
        return fb

    @torch.inference_mode()
    def run_plan(self, plan: ForwardPlan) -> torch.Tensor:
        """One forward: float32 logits of the plan's logit rows, or the hidden states when it
        wants none. Every tensor-parallel rank runs each plan; rank 0 first sends it to the others."""
        if self.plan_sender is not None:
            self.plan_sender.publish(plan)
        fb = self.build_forward_batch(plan)
        if self.cuda_graph_runner is not None and self.cuda_graph_runner.can_run(fb):
            return self.cuda_graph_runner.replay(fb)
        self.attn_backend.init_forward_metadata(fb)
        hidden = self.model.forward(fb.input_ids, fb.positions, fb)
        if not plan.wants_logits:
            return hidden
        if plan.logit_rows is not None:
            hidden = hidden[to_device(plan.logit_rows, torch.int64, hidden.device)]
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def forward(self, batch) -> LogitsOutput:
        bs = len(batch.reqs)
        if batch.forward_mode.is_decode():
            with self.busy_timer.measure():
                return LogitsOutput(self.run_plan(ForwardPlan.of_batch(batch, None)), [None] * bs)
        rows, spans = extend_logit_rows(batch)
        with self.busy_timer.measure():
            logits = self.run_plan(ForwardPlan.of_batch(batch, rows))
            last = to_device([a + n - 1 for a, n in spans], torch.int64, logits.device)
            inputs = [logits[a : a + n - 1] if n > 1 else None for a, n in spans]
            return LogitsOutput(logits[last], inputs)

    @torch.inference_mode()
    def forward_pooled(self, batch) -> torch.Tensor:
        """An extend batch of a pooling model -> float32 [bs, hidden]: per request, this forward's
        part of the pooling (layers/pooler.py); the scheduler combines a chunked prompt's parts."""
        with self.busy_timer.measure():
            hidden = self.run_plan(ForwardPlan.of_batch(batch, []))
            return pool_rows(hidden, batch.extend_lens, self.pooler.pooling_type)

    @torch.inference_mode()
    def embedding_head(self, pooled: torch.Tensor, num_tokens: List[int]) -> torch.Tensor:
        """Whole prompts' pooled reductions [k, hidden] -> float32 embeddings or scores [k, dim]."""
        if isinstance(self.model, PoolingModel):
            return self.model.embedding_head(pooled, num_tokens)
        return self.pooler.finish(pooled, num_tokens)  # a causal LM under --is-embedding


def pooler_of(model) -> Pooler:
    """A pooling model's own pooler; a causal LM served with --is-embedding pools like SGLang's
    (the last token, L2-normalized, unless the config's `pooling_type` says mean)."""
    if isinstance(model, PoolingModel):
        return model.pooler
    return Pooler(pooling_type_of(model.config), normalize=True)


@torch.inference_mode()
def profile_prefill_peak(runner: "ModelRunner", num_tokens: int) -> int:
    """Peak memory above the weights of one `num_tokens` prefill through the runner's attention
    backend, on throwaway pools (as requests of at most the context length)."""
    per_req = max(min(num_tokens, runner.model_config.context_len - 1), 1)
    lens = [per_req] * (num_tokens // per_req) + ([num_tokens % per_req] if num_tokens % per_req else [])
    return throwaway_extend(runner, lens, [0] * len(lens))


def throwaway_extend(runner: "ModelRunner", extend_lens: List[int], prefix_lens: List[int],
                     input_ids: Optional[torch.Tensor] = None) -> int:
    """One extend forward (random ids unless `input_ids` are given; the prefixes' KV is zeros) on
    throwaway pools laid out like the real ones, so every kernel it launches is the build a real
    batch of that kind uses. Returns the peak memory it allocated above what was allocated before
    it ran."""
    mc = runner.model_config
    dev = runner.device
    bs = len(extend_lens)
    seq = [p + e for p, e in zip(prefix_lens, extend_lens)]
    starts = [sum(extend_lens[:i]) for i in range(bs)]
    r2t = ReqToTokenPool(bs + 1, mc.context_len + 4, dev)
    kv = TokenToKVPool(sum(seq) + 1, runner._kv_dtype(), runner.num_kv_heads, mc.head_dim, mc.num_hidden_layers, dev)
    cuda = torch.device(dev).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()  # weights and the throwaway pools: the peak is measured above them
        torch.cuda.reset_peak_memory_stats()
    slots = torch.arange(1, sum(seq) + 1, device=dev)
    rows = torch.split(slots, seq)
    for i, row in enumerate(rows):
        r2t.write(i, 0, row)
    out_loc = torch.cat([row[p:] for row, p in zip(rows, prefix_lens)])
    num_tokens = sum(extend_lens)
    ids = torch.randint(0, mc.vocab_size, (num_tokens,), device=dev) if input_ids is None else input_ids.to(dev)
    ext_t = torch.tensor(extend_lens, device=dev)
    fb = ForwardBatch(
        forward_mode=ForwardMode.EXTEND, batch_size=bs, input_ids=ids,
        positions=torch.cat([torch.arange(p, p + e, device=dev) for p, e in zip(prefix_lens, extend_lens)]),
        req_pool_indices=torch.arange(bs, dtype=torch.int64, device=dev),
        seq_lens=torch.tensor(seq, device=dev), out_cache_loc=out_loc, req_to_token_pool=r2t,
        token_to_kv_pool=kv, attn_backend=runner.attn_backend, seq_lens_cpu=seq,
        req_pool_indices_cpu=list(range(bs)), extend_seq_lens_cpu=list(extend_lens),
        extend_prefix_lens_cpu=list(prefix_lens), extend_seq_lens=ext_t,
        extend_prefix_lens=torch.tensor(prefix_lens, dtype=torch.int64, device=dev),
        extend_start_loc=torch.tensor(starts, dtype=torch.int64, device=dev),
    )
    fb.attn_backend.init_forward_metadata(fb)
    hidden = runner.model.forward(ids, fb.positions, fb)
    last = hidden[torch.tensor(starts, device=dev) + ext_t - 1]
    logits = runner.model.compute_logits(last) if runner.model_config.is_generation else last
    if not cuda:
        return 0
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del fb, hidden, logits, kv, r2t
    torch.cuda.empty_cache()
    return max(int(peak), 0)
