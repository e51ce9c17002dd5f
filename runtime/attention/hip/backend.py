"""The `hip` attention backend: InfiniteHiP sparse attention with training-free context extension.

Per layer and forward: the query blocks of every request in the batch (prefill is batched across
requests) estimate their masks through the multi-stage pruning (mask.py), then attend over
sink + selected blocks + sliding window (block-sparse attention). With `using_extend` (the default)
the model leaves q and k un-rotated, the KV pool stores un-rotated keys, and the kernels rotate them
at chunk-indexed / relative positions for pruning and at compacted positions for attention, so no
query ever sees a distance longer than about sink + selected + window + block: the context extends
past the trained window.

Decode keeps, per request and per layer, the mask and the inputs of every stage after the first;
at decode step t since the request's last extend, the first stage whose refresh interval divides t is
recomputed from its cached input (t = 0: everything), otherwise the cached mask is reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional

import torch

from sgl.runtime.attention.base import AttentionBackend
from sgl.runtime.attention.hip.config import HipConfig, load_hip_config
from sgl.runtime.attention.hip.mask import (MaskState, QueryBlocks, block_sparse_attention, estimate_mask,
                                            rope_table_size)

if TYPE_CHECKING:
    from sgl.runtime.executor.forward_batch import ForwardBatch
    from sgl.runtime.layers.attention import RadixAttention

logger = logging.getLogger(__name__)


class HipAttnBackend(AttentionBackend):
    def __init__(self, model_runner=None, config: Optional[HipConfig] = None, rotary=None,
                 context_len: Optional[int] = None, device=None):
        """Built from a ModelRunner, or (tests, benchmarks) from a config, the model's rotary
        embedding, the context length and the device."""
        self.model_runner = model_runner
        self.device = torch.device(device or (model_runner.device if model_runner is not None else "cpu"))
        if config is None:
            config = load_hip_config(model_runner.server_args.hip_attention_config if model_runner else None)
        self.config = config
        self.applies_rope = config.using_extend
        if rotary is None and model_runner is not None:
            rotary = _find_rotary(model_runner.model)
        if self.applies_rope:
            if rotary is None:
                raise ValueError("HiP attention with using_extend needs a model with rotary embeddings")
            if rotary.rotary_dim != rotary.head_size or not rotary.is_neox_style or rotary.mscale != 1.0:
                raise ValueError("HiP attention applies RoPE itself and supports full-head, neox-style RoPE without "
                                 "a cos/sin factor (LongRoPE's) only; "
                                 "set \"using_extend\": false in --hip-attention-config for this model")
        self.rotary = rotary
        if context_len is None:
            context_len = model_runner.model_config.context_len if model_runner else 1 << 17
        self.context_len = context_len
        self._table: Dict[torch.device, tuple] = {}
        # decode mask cache: per layer, a MaskState over every request row; per row, decode steps
        # since its last extend
        self._cache: Dict[int, MaskState] = {}
        self._steps: List[int] = []
        self._graph_plan: Optional[_DecodePlan] = None  # the plan of the graph being captured
        if model_runner is not None:
            logger.info("HiP attention: %s", config.to_json())

    # ---- planning ---------------------------------------------------------------------------
    def rope_table(self, device) -> tuple:
        device = torch.device(device)
        if device not in self._table:
            if not self.applies_rope:
                empty = torch.zeros(1, 1, device=device)
                self._table[device] = (empty, empty)
            else:
                size = rope_table_size(self.config.layers, self.config.block_size_q, self.context_len)
                cos, sin = self.rotary.cos_sin(torch.arange(size, device=device))
                self._table[device] = (cos.contiguous(), sin.contiguous())
        return self._table[device]

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        if fb.seq_lens_cpu is None:
            fb.seq_lens_cpu = fb.seq_lens.tolist()
        if fb.req_pool_indices_cpu is None:
            fb.req_pool_indices_cpu = fb.req_pool_indices.tolist()
        rows = fb.req_pool_indices_cpu
        if fb.forward_mode.is_decode():
            row_from = self._advance(rows)
            blocks = QueryBlocks.for_decode(fb.req_pool_indices, fb.seq_lens, max(fb.seq_lens_cpu))
            fb.attn_metadata = _DecodePlan(fb.req_pool_indices, fb.seq_lens, max(fb.seq_lens_cpu), min(row_from),
                                           self.n_stages, torch.tensor(row_from, dtype=torch.int64,
                                                                       device=fb.seq_lens.device),
                                           fb.req_pool_indices, blocks)
        else:
            self._size_steps(rows)
            for r in rows:  # the next decode step recomputes every stage
                self._steps[r] = 0
            if getattr(fb.token_to_kv_pool, "offloaded", False):
                fb.attn_metadata = _StagedExtend.build(fb, self.config.block_size_q)
            else:
                fb.attn_metadata = QueryBlocks.for_extend(rows, fb.extend_prefix_lens_cpu, fb.extend_seq_lens_cpu,
                                                          self.config.block_size_q, fb.seq_lens.device)

    @property
    def n_stages(self) -> int:
        return len(self.config.layers[0].stages)

    def _size_steps(self, rows: List[int]) -> None:
        top = max(rows, default=-1) + 1
        if top > len(self._steps):
            self._steps.extend([0] * (top - len(self._steps)))

    def _advance(self, rows: List[int]) -> List[int]:
        """Per request row, the first stage its decode step recomputes (n_stages: none); counts the step."""
        self._size_steps(rows)
        row_from = []
        for r in rows:
            stage = self.config.refresh_stage(self._steps[r])
            row_from.append(self.n_stages if stage is None else stage)
            self._steps[r] += 1
        return row_from

    # ---- CUDA graphs: one graph per (batch size, first recomputed stage) ----------------------
    def init_cuda_graph_state(self, max_bs: int, max_ctx: Optional[int] = None) -> None:
        dev = self.device
        self._graph_row_from = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        # padded rows write their (discarded) masks to a scratch row of the mask cache, never to a
        # request's row
        self._graph_cache_rows = torch.zeros(max_bs, dtype=torch.int64, device=dev)

    def cuda_graph_variants(self) -> tuple:
        return tuple(range(self.n_stages + 1))

    def init_forward_metadata_capture_cuda_graph(self, bs: int, req_pool_indices, seq_lens, seq_lens_cpu=None,
                                                 variant=None) -> None:
        self._graph_plan = _DecodePlan(req_pool_indices, seq_lens, self.context_len, int(variant), self.n_stages,
                                       self._graph_row_from[:bs], self._graph_cache_rows[:bs], None)

    def cuda_graph_variant(self, fb: "ForwardBatch", padded_bs: int) -> int:
        rows = fb.req_pool_indices_cpu if fb.req_pool_indices_cpu is not None else fb.req_pool_indices.tolist()
        row_from = self._advance(rows)
        scratch = fb.req_to_token_pool.req_to_token.shape[0]  # the cache's extra row
        pad = padded_bs - len(rows)
        self._graph_row_from[:padded_bs].copy_(torch.tensor(row_from + [self.n_stages] * pad), non_blocking=True)
        self._graph_cache_rows[:padded_bs].copy_(torch.tensor(list(rows) + [scratch] * pad), non_blocking=True)
        return min(row_from)

    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_cpu=None) -> None:
        """Everything was planned by cuda_graph_variant."""

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        return 1

    # ---- forward ----------------------------------------------------------------------------
    def _inputs(self, q, layer: "RadixAttention", fb: "ForwardBatch"):
        q = (q.view(-1, layer.tp_q_head_num, layer.head_dim).float() * layer.scaling).to(q.dtype)
        k_buf, v_buf = fb.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        return q, k_buf, v_buf, fb.req_to_token_pool.req_to_token

    def forward_extend(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        blocks = fb.attn_metadata
        q, k_buf, v_buf, table = self._inputs(q, layer, fb)
        if isinstance(blocks, _StagedExtend):
            # offloaded KV: this layer's keys and values of the batch's requests, read from host
            # memory into one dense GPU tensor (the chunk's own tokens were just written there)
            k_buf, v_buf = fb.token_to_kv_pool.gather(layer.layer_id, blocks.slots)
            table, blocks = blocks.table, blocks.blocks
        cfg = self.config.layer(layer.layer_id)
        cos, sin = self.rope_table(q.device)
        mask = estimate_mask(q, k_buf, table, blocks, cfg, self.config.using_extend, cos, sin)
        out = block_sparse_attention(q, k_buf, v_buf, table, blocks, mask, cfg, self.config.using_extend, cos, sin)
        return out.view(-1, layer.tp_q_head_num * layer.head_dim)

    def forward_decode(self, q, k, v, layer: "RadixAttention", fb: "ForwardBatch") -> torch.Tensor:
        plan: _DecodePlan = fb.attn_metadata if fb.attn_metadata is not None else self._graph_plan
        if plan is None:
            raise RuntimeError("HiP decode without init_forward_metadata or a CUDA-graph capture plan")
        q, k_buf, v_buf, table = self._inputs(q, layer, fb)
        cfg = self.config.layer(layer.layer_id)
        cos, sin = self.rope_table(q.device)
        # under a CUDA graph the blocks are derived inside the graph from the static inputs
        blocks = plan.blocks or QueryBlocks.for_decode(plan.req_pool_indices, plan.seq_lens, plan.max_seq_len)
        rows = plan.cache_rows
        pool = fb.token_to_kv_pool
        offload = getattr(pool, "offloaded", False)
        mask_cache = pool.mask_cache(layer.layer_id) if offload else None
        store = self._layer_cache(layer.layer_id, cfg, table.shape[0] + 1, q.device)
        cached = MaskState(store.starts[rows], store.ks[rows], [None if s is None else s[rows] for s in store.stage_inputs])
        if plan.from_stage >= plan.n_stages:
            mask = cached
        else:
            mask = estimate_mask(q, k_buf, table, blocks, cfg, self.config.using_extend, cos, sin,
                                 from_stage=plan.from_stage, cached=cached, row_from=plan.row_from, cache=mask_cache)
            store.starts[rows] = mask.starts
            store.ks[rows] = mask.ks
            for s in range(1, plan.n_stages):
                store.stage_inputs[s][rows] = mask.stage_inputs[s]
        out = block_sparse_attention(q, k_buf, v_buf, table, blocks, mask, cfg, self.config.using_extend, cos, sin,
                                     cache=pool.sa_cache(layer.layer_id) if offload else None)
        if offload and plan.from_stage < plan.n_stages:
            # a refresh step: the tokens this layer read and missed enter its GPU caches (LRU)
            pool.update_caches(layer.layer_id)
        return out.view(-1, layer.tp_q_head_num * layer.head_dim)

    def _layer_cache(self, layer_id: int, cfg, rows: int, device) -> MaskState:
        store = self._cache.get(layer_id)
        if store is None or store.starts.shape[0] != rows or store.starts.device != torch.device(device):
            def lists(n):
                return torch.zeros(rows, n, dtype=torch.int64, device=device)

            inputs = [None] + [lists(st.k // st.chunk_size) for st in cfg.stages[1:]]
            store = MaskState(lists(cfg.max_blocks), torch.zeros(rows, dtype=torch.int64, device=device), inputs)
            self._cache[layer_id] = store
        return store


@dataclass
class _DecodePlan:
    """A decode step: the first stage any row recomputes (`from_stage`; n_stages: none), per row
    (`row_from`), the mask-cache rows, and the query blocks (None under a CUDA graph: built per layer
    from the static req_pool_indices / seq_lens, and the first stage sized by the context length)."""

    req_pool_indices: torch.Tensor
    seq_lens: torch.Tensor
    max_seq_len: int
    from_stage: int
    n_stages: int
    row_from: torch.Tensor
    cache_rows: torch.Tensor
    blocks: Optional[QueryBlocks]


@dataclass
class _StagedExtend:
    """An extend over an offloaded pool: the pool slots of every token of the batch's requests
    (request after request), the table from (request, position) to an index in that list, and the
    query blocks with rows renumbered to the batch's requests."""

    slots: torch.Tensor
    table: torch.Tensor
    blocks: QueryBlocks

    @staticmethod
    def build(fb: "ForwardBatch", block_size_q: int) -> "_StagedExtend":
        rows, lens = fb.req_pool_indices_cpu, fb.seq_lens_cpu
        dev = fb.seq_lens.device
        req_to_token = fb.req_to_token_pool.req_to_token
        slots = torch.cat([req_to_token[r, :n] for r, n in zip(rows, lens)]).long()
        width = max(lens, default=1)
        offsets = torch.tensor([0] + list(lens[:-1]), device=dev).cumsum(0)
        table = (offsets[:, None] + torch.arange(width, device=dev)[None, :]).clamp(max=slots.shape[0] - 1)
        table = table.to(torch.int32)  # (past a request's length: never read)
        blocks = QueryBlocks.for_extend(list(range(len(rows))), fb.extend_prefix_lens_cpu, fb.extend_seq_lens_cpu,
                                        block_size_q, dev)
        return _StagedExtend(slots, table, blocks)


def _find_rotary(model):
    from sgl.runtime.layers.rotary import RotaryEmbedding

    if model is None:
        return None
    for m in model.modules():
        emb = getattr(m, "rotary_emb", None)
        if isinstance(emb, RotaryEmbedding):
            return emb
    return None
