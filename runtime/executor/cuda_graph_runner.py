"""CUDA graphs for decode: capture the model forward once per padded batch size, then replay.

A decode step of a small batch is dominated by kernel launches from Python; replaying a captured
graph issues them all at once. Inputs live in static buffers; a batch is padded up to the next
captured size, padded rows read request row 0 with length 1 and write KV slot 0 (the dummy), so
they never touch real data. The attention backend provides the capture hooks:

- `init_cuda_graph_state(max_bs)`: allocate its static metadata buffers once;
- `init_forward_metadata_capture_cuda_graph(bs, req_pool_indices, seq_lens)`: plan for capture;
- `init_forward_metadata_replay_cuda_graph(bs, req_pool_indices, seq_lens, seq_lens_cpu)`:
  refresh the plan in place before a replay.
"""

from __future__ import annotations

import bisect
import logging
import os
from typing import Dict, Hashable, List, Optional, Tuple

import torch

from sgl.runtime.executor.forward_batch import ForwardBatch, ForwardMode

logger = logging.getLogger(__name__)


def capture_batch_sizes(max_bs: int, req_slots: int, explicit: Optional[List[int]] = None) -> List[int]:
    """SGLang's default list 1, 2, 4, 8, 16, 24, ... capped by --cuda-graph-max-bs and the pool."""
    sizes = explicit or ([1, 2, 4] + list(range(8, 1025, 8)))
    cap = min(max_bs, req_slots)
    return sorted({s for s in sizes if 1 <= s <= cap})


GIB = 1 << 30


def srt_max_batch():
    """SRT_MAX_BATCH (the HiP fork's variable): the largest decode batch captured in CUDA graphs,
    None when unset or not positive."""
    value = os.environ.get("SRT_MAX_BATCH", "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"SRT_MAX_BATCH must be an integer, got {value!r}") from None
    return n if n > 0 else None


def default_cuda_graph_max_bs(total_memory: int, tp_size: int = 1) -> int:
    """--cuda-graph-max-bs when unset, from the card's memory: SGLang's 8 (80 at tp >= 4) on cards
    under 25 GB and 160 up to 60 GB; 256 on 80 GB-class cards and larger, whose KV pool keeps
    more than 160 requests decoding at once (Llama-3.1-8B, 1024 + 1024 tokens: ~234 on an H100),
    and an eager decode step there leaves the GPU waiting on kernel launches."""
    if total_memory < 25 * GIB:
        return 8 if tp_size < 4 else 80
    if total_memory < 60 * GIB:
        return 160
    return 256


class CudaGraphRunner:
    def __init__(self, model_runner):
        self.mr = model_runner
        sa = model_runner.server_args
        self.backend = model_runner.attn_backend
        max_bs = sa.cuda_graph_max_bs or (max(sa.cuda_graph_bs) if sa.cuda_graph_bs else default_cuda_graph_max_bs(
            torch.cuda.get_device_properties(model_runner.device).total_memory, sa.tp_size))
        max_bs = min(max_bs, srt_max_batch() or max_bs)
        self.batch_sizes = capture_batch_sizes(max_bs, model_runner.req_to_token_pool.size - 1, sa.cuda_graph_bs)
        # With --disable-cuda-graph-padding only batches of exactly a captured size replay.
        self.exact_only = sa.disable_cuda_graph_padding
        self.max_bs = self.batch_sizes[-1]
        dev = model_runner.device
        self.input_ids = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.req_pool_indices = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.seq_lens = torch.ones(self.max_bs, dtype=torch.int64, device=dev)
        self.out_cache_loc = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        # keyed by (batch size, the backend's variant: HiP captures one graph per refresh state)
        self.graphs: Dict[Tuple[int, Hashable], torch.cuda.CUDAGraph] = {}
        self.outputs: Dict[Tuple[int, Hashable], torch.Tensor] = {}
        self.variants = tuple(self.backend.cuda_graph_variants())
        self.pool = None
        self.compiled_forward = self._compile() if sa.enable_torch_compile else None
        self.compile_max_bs = sa.torch_compile_max_bs
        self.backend.init_cuda_graph_state(self.max_bs)
        self._capture_all()

    def _compile(self):
        """--enable-torch-compile: the decode forward of batches up to --torch-compile-max-bs is
        compiled by TorchInductor (fusing the elementwise work around the custom kernels), then
        captured in its CUDA graph like the eager forward."""
        import torch._dynamo

        # One specialization per captured batch size.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * len(self.batch_sizes))
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 4 * len(self.batch_sizes))
        return torch.compile(self.mr.model.forward, dynamic=False)

    def can_run(self, fb: ForwardBatch) -> bool:
        if not fb.forward_mode.is_decode() or fb.batch_size > self.max_bs:
            return False
        return fb.batch_size in self.batch_sizes if self.exact_only else True

    # ---- capture ----------------------------------------------------------------------------
    def _capture_all(self) -> None:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for bs in reversed(self.batch_sizes):  # largest first: later graphs reuse its pool
                for variant in self.variants:
                    self._capture(bs, variant, stream)
        torch.cuda.synchronize()
        logger.info("captured CUDA graphs for decode batch sizes %s", self.batch_sizes)

    def _forward_batch(self, bs: int) -> ForwardBatch:
        mr = self.mr
        return ForwardBatch(
            forward_mode=ForwardMode.DECODE, batch_size=bs, input_ids=self.input_ids[:bs],
            positions=self.positions[:bs], req_pool_indices=self.req_pool_indices[:bs],
            seq_lens=self.seq_lens[:bs], out_cache_loc=self.out_cache_loc[:bs],
            req_to_token_pool=mr.req_to_token_pool, token_to_kv_pool=mr.token_to_kv_pool,
            attn_backend=self.backend,
        )

    @torch.inference_mode()
    def _capture(self, bs: int, variant: Hashable, stream: torch.cuda.Stream) -> None:
        fb = self._forward_batch(bs)
        self.backend.init_forward_metadata_capture_cuda_graph(bs, fb.req_pool_indices, fb.seq_lens, variant=variant)

        forward = self.mr.model.forward
        if self.compiled_forward is not None and bs <= self.compile_max_bs:
            forward = self.compiled_forward

        def run() -> torch.Tensor:
            hidden = forward(fb.input_ids, fb.positions, fb)
            return self.mr.model.compute_logits(hidden)

        for _ in range(2):  # warm up (lazy inits, autotuning) outside the graph
            run()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=stream):
            out = run()
        if self.pool is None:
            self.pool = graph.pool()
        self.graphs[(bs, variant)] = graph
        self.outputs[(bs, variant)] = out

    # ---- replay -----------------------------------------------------------------------------
    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        """Logits [bs, vocab] of a decode batch."""
        bs = fb.batch_size
        padded = self.batch_sizes[bisect.bisect_left(self.batch_sizes, bs)]
        if padded != bs:
            self.seq_lens[bs:padded].fill_(1)
            self.req_pool_indices[bs:padded].zero_()
            self.out_cache_loc[bs:padded].zero_()
            self.input_ids[bs:padded].zero_()
            self.positions[bs:padded].zero_()
        self.input_ids[:bs].copy_(fb.input_ids)
        self.positions[:bs].copy_(fb.positions)
        self.req_pool_indices[:bs].copy_(fb.req_pool_indices)
        self.seq_lens[:bs].copy_(fb.seq_lens)
        self.out_cache_loc[:bs].copy_(fb.out_cache_loc)
        seq_lens_cpu = list(fb.seq_lens_cpu) + [1] * (padded - bs) if fb.seq_lens_cpu is not None else None
        variant = self.backend.cuda_graph_variant(fb, padded)
        self.backend.init_forward_metadata_replay_cuda_graph(
            padded, self.req_pool_indices[:padded], self.seq_lens[:padded], seq_lens_cpu
        )
        self.graphs[(padded, variant)].replay()
        return self.outputs[(padded, variant)][:bs]
