"""Triton attention backend: the default on GPUs.

Decode runs split-K flash decoding over req_to_token (`sgl.kernels.decode_attention`); extend runs
causal flash attention of the new tokens over their cached prefix (`sgl.kernels.extend_attention`);
new K/V are stored with one fused kernel when the pool is the plain `TokenToKVPool`.

Planning (`init_forward_metadata`):
- decode: nothing reaches the host. The split count of each request is derived from seq_lens inside
  the kernels (at most `--triton-attention-num-kv-splits`, fewer for short requests), so the plan is
  only the float32 scratch for the per-split results; launch shapes depend only on the batch size.
- extend: the query-tile table, built from the host-side lengths (`extend_seq_lens_cpu`,
  `extend_prefix_lens_cpu`) and copied to the device without waiting for it.
- mixed (`--enable-mixed-chunk`): both. The extend kernel runs the prefill requests and the decode
  kernel the decode requests at the batch's end: through the extend kernel, a decode request's one
  query would fill a whole query tile and its long prefix would get no split-K parallelism (a
  mixed step of 465 decodes + 8K prompt tokens took 311 ms on an H200 that way, against ~250 ms
  estimated for the prefill and the decode step run apart; docs/benchmarks.md).

CUDA graphs (decode only), as `runtime/executor/cuda_graph_runner.py` drives them:
1. `init_cuda_graph_state(max_bs)` once: allocates the split scratch for `max_bs` requests. It does
   not grow with the context: the kernels loop over each request's seq_len.
2. Per captured batch size bs: `init_forward_metadata_capture_cuda_graph(bs, req_pool_indices,
   seq_lens)` with the runner's static tensors, then the model forward is captured with a
   ForwardBatch over those same tensors and `attn_metadata` left None: the backend then uses the
   plan it made for bs (views of the static scratch).
3. Before each replay the runner copies the batch into its static tensors, padding rows with
   req_pool_indices 0, seq_lens `get_cuda_graph_seq_len_fill_value()` (1) and out_cache_loc 0 (the
   dummy slot), and calls `init_forward_metadata_replay_cuda_graph(bs, req_pool_indices, seq_lens,
   seq_lens_cpu)`. There is nothing to refresh: the captured kernels read seq_lens and
   req_pool_indices from the static tensors and derive the split counts on the device; the call
   only checks that bs was captured. Padded rows produce finite, unused outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention, decode_kv_splits, default_decode_config
from sgl.kernels.extend_attention import ExtendTiles, default_extend_config, extend_attention, plan_extend_tiles
from sgl.kernels.kv_store import store_kv
from sgl.kernels.utils import interpreting
from sgl.runtime.attention.base import AttentionBackend
from sgl.runtime.distributed.parallel_state import get_tp_group
from sgl.runtime.mem.memory_pool import TokenToKVPool

if TYPE_CHECKING:
    from sgl.runtime.executor.forward_batch import ForwardBatch
    from sgl.runtime.layers.attention import RadixAttention


@dataclass
class DecodeMetadata:
    mid_o: torch.Tensor  # [bs, H, max_splits, Dv] float32: per-split outputs
    mid_lse: torch.Tensor  # [bs, H, max_splits] float32: per-split log2-sum-exp


@dataclass
class ExtendMetadata:
    tiles: ExtendTiles
    extend_start_loc: torch.Tensor  # [bs]: first row of each request in q/k/v


@dataclass
class MixedMetadata:
    extend: ExtendMetadata  # the first batch_size - num_decode_reqs requests
    decode: DecodeMetadata  # the last num_decode_reqs requests


def _uses_plain_store(pool) -> bool:
    """The fused store writes the buffers directly; only safe where the pool's store is the plain one
    (a pool that offloads or quantises overrides set_kv_buffer and keeps its own path)."""
    return type(pool).set_kv_buffer is TokenToKVPool.set_kv_buffer


class TritonAttnBackend(AttentionBackend):
    supports_logit_cap = True  # both kernels soft-cap and window in-kernel (sgl.kernels.*_attention)
    supports_sliding_window = True

    def __init__(self, model_runner):
        sa, mc = model_runner.server_args, model_runner.model_config
        splits = sa.triton_attention_num_kv_splits
        if not isinstance(splits, int) or splits < 1:
            raise ValueError(f"--triton-attention-num-kv-splits must be a positive integer, got {splits!r}")
        self.max_kv_splits = splits
        self.device = torch.device(model_runner.device)
        tp = get_tp_group()  # this rank's heads (the split the model was built with)
        self.num_heads = mc.get_num_attention_heads(tp.size, tp.rank)
        self.num_kv_heads = mc.get_num_kv_heads(tp.size, tp.rank)
        self.num_sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                        if self.device.type == "cuda" else 0)
        self.v_head_dim = mc.head_dim
        self.decode_config = default_decode_config(interpreting())
        self.extend_config = default_extend_config(mc.head_dim, interpreting())
        self.cuda_graph_max_bs = 0
        self._graph_scratch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._graph_metadata: Dict[int, DecodeMetadata] = {}

    # ---- planning -----------------------------------------------------------------------------
    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        if fb.forward_mode.is_decode():
            fb.attn_metadata = self._decode_scratch(fb.batch_size)
        elif fb.forward_mode.is_mixed():
            num_extend = fb.batch_size - fb.num_decode_reqs
            fb.attn_metadata = MixedMetadata(self._extend_metadata(fb, num_extend),
                                             self._decode_scratch(fb.num_decode_reqs))
        elif fb.forward_mode.is_extend():
            fb.attn_metadata = self._extend_metadata(fb, fb.batch_size)

    def kv_splits(self, bs: int) -> int:
        """Most KV splits of a decode batch of `bs` requests (see decode_kv_splits)."""
        return decode_kv_splits(bs, self.num_kv_heads, self.num_sms, self.max_kv_splits)

    def _decode_scratch(self, bs: int) -> DecodeMetadata:
        return DecodeMetadata(*alloc_decode_scratch(bs, self.num_heads, self.v_head_dim, self.kv_splits(bs),
                                                    self.device))

    def _extend_metadata(self, fb: "ForwardBatch", num_reqs: int) -> ExtendMetadata:
        """The plan of the batch's first `num_reqs` requests (all of them but a mixed batch's decodes)."""
        ext = fb.extend_seq_lens_cpu if fb.extend_seq_lens_cpu is not None else fb.extend_seq_lens.tolist()
        pre = fb.extend_prefix_lens_cpu if fb.extend_prefix_lens_cpu is not None else fb.extend_prefix_lens.tolist()
        tiles = plan_extend_tiles(ext[:num_reqs], pre[:num_reqs], self.extend_config.block_m, self.device)
        start = fb.extend_start_loc
        if start is None:
            start = torch.cumsum(fb.extend_seq_lens, 0) - fb.extend_seq_lens
        return ExtendMetadata(tiles, start[:num_reqs])

    # ---- CUDA graphs (see the module docstring for the call order) ------------------------------
    def init_cuda_graph_state(self, max_bs: int, max_ctx: Optional[int] = None) -> None:
        """Allocate decode scratch for up to `max_bs` requests. `max_ctx` is accepted for the runner's
        uniform call; this backend's buffers do not depend on the context length."""
        if max_bs < 1:
            raise ValueError(f"max_bs must be >= 1, got {max_bs}")
        # sized for the most splits (batch 1); a captured batch of bs uses the first kv_splits(bs)
        self._graph_scratch = alloc_decode_scratch(max_bs, self.num_heads, self.v_head_dim, self.kv_splits(1),
                                                   self.device)
        self.cuda_graph_max_bs = max_bs
        self._graph_metadata.clear()

    def init_forward_metadata_capture_cuda_graph(self, bs: int, req_pool_indices: torch.Tensor,
                                                 seq_lens: torch.Tensor, seq_lens_cpu=None, variant=None) -> None:
        """Plan a captured decode batch of `bs` rows over the static scratch. The kernels will read
        req_pool_indices / seq_lens (the runner's static tensors) from the ForwardBatch at capture."""
        if self._graph_scratch is None or bs > self.cuda_graph_max_bs:
            raise ValueError(f"batch size {bs} exceeds the CUDA-graph state (max_bs {self.cuda_graph_max_bs}); "
                             "call init_cuda_graph_state first")
        if req_pool_indices.shape[0] != bs or seq_lens.shape[0] != bs:
            raise ValueError(f"capture of batch size {bs} got {req_pool_indices.shape[0]} rows / {seq_lens.shape[0]} lengths")
        mid_o, mid_lse = self._graph_scratch
        self._graph_metadata[bs] = DecodeMetadata(mid_o[:bs], mid_lse[:bs])

    def init_forward_metadata_replay_cuda_graph(self, bs: int, req_pool_indices: torch.Tensor,
                                                seq_lens: torch.Tensor, seq_lens_cpu=None) -> None:
        """Nothing to recompute before a replay (see the module docstring); checks bs was captured."""
        if bs not in self._graph_metadata:
            raise ValueError(f"no CUDA graph was captured for batch size {bs}")

    def cuda_graph_variants(self) -> tuple:
        return (None,)

    def cuda_graph_variant(self, fb: "ForwardBatch", padded_bs: int):
        return None

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        """seq_len of padded rows: one key (their req_to_token row's first slot), so no empty softmax."""
        return 1

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch", save_kv: bool = True) -> torch.Tensor:
        if save_kv and k is not None and _uses_plain_store(fb.token_to_kv_pool):
            k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
            store_kv(k_buf, v_buf, fb.out_cache_loc, k, v)
            save_kv = False
        return super().forward(q, k, v, layer, fb, save_kv=save_kv)

    def _decode_metadata(self, fb: "ForwardBatch") -> DecodeMetadata:
        """The batch's own plan, or under CUDA-graph capture (attn_metadata None) the captured one."""
        meta = fb.attn_metadata if fb.attn_metadata is not None else self._graph_metadata.get(fb.batch_size)
        if not isinstance(meta, DecodeMetadata):
            raise RuntimeError("decode forward without init_forward_metadata or a CUDA-graph capture plan")
        return meta

    def forward_decode(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        q3 = q.view(-1, layer.tp_q_head_num, layer.qk_head_dim)
        out = q.new_empty(q3.shape[0], layer.tp_q_head_num, layer.v_head_dim)
        self._decode(q3, out, layer, fb, self._decode_metadata(fb), slice(None))
        return out.view(-1, layer.tp_q_head_num * layer.v_head_dim)

    def forward_extend(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        meta = fb.attn_metadata
        if k is None:  # the caller stored the new K/V itself (save_kv=False, k=None): read them back
            k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
            k, v = k_buf[fb.out_cache_loc], v_buf[fb.out_cache_loc]
        q3 = q.view(-1, layer.tp_q_head_num, layer.qk_head_dim)
        k3 = k.view(-1, layer.tp_k_head_num, layer.qk_head_dim)
        v3 = v.view(-1, layer.tp_v_head_num, layer.v_head_dim)
        out = q.new_empty(q3.shape[0], layer.tp_q_head_num, layer.v_head_dim)
        if isinstance(meta, MixedMetadata):
            # decode requests (one token each) are the last rows; their K/V are already in the pool
            split, first_decode = q3.shape[0] - fb.num_decode_reqs, fb.batch_size - fb.num_decode_reqs
            self._extend(q3[:split], k3[:split], v3[:split], out[:split], layer, fb, meta.extend)
            self._decode(q3[split:], out[split:], layer, fb, meta.decode, slice(first_decode, None))
        else:
            self._extend(q3, k3, v3, out, layer, fb, meta)
        return out.view(-1, layer.tp_q_head_num * layer.v_head_dim)

    def _extend(self, q3, k3, v3, out, layer: "RadixAttention", fb: "ForwardBatch", meta: ExtendMetadata) -> None:
        """Extend attention of the requests `meta` plans (the batch's first ones)."""
        n = meta.extend_start_loc.shape[0]
        k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        extend_attention(q3, k3, v3, out, k_buf, v_buf, fb.req_to_token_pool.req_to_token, fb.req_pool_indices[:n],
                         fb.extend_prefix_lens[:n], fb.extend_seq_lens[:n], meta.extend_start_loc, meta.tiles,
                         layer.scaling, self.extend_config, layer.logit_cap, layer.sliding_window_size)

    def _decode(self, q3, out, layer: "RadixAttention", fb: "ForwardBatch", meta: DecodeMetadata, reqs: slice) -> None:
        """Decode attention of the batch's requests `reqs`, one query row each."""
        k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        decode_attention(q3, k_buf, v_buf, out, fb.req_to_token_pool.req_to_token, fb.req_pool_indices[reqs],
                         fb.seq_lens[reqs], meta.mid_o, meta.mid_lse, layer.scaling, self.kv_splits(q3.shape[0]),
                         self.decode_config, layer.logit_cap, layer.sliding_window_size)
