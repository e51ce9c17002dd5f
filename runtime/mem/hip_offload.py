"""The offloaded KV pool of HiP attention (`--enable-hip-offload`, docs/hip.md "KV offloading").

K and V of every layer live in pinned host memory; the GPU reads them in place (unified virtual
addressing, `sgl.kernels.hip_offload.uva_view`). Per layer two GPU caches of token rows keep what the
decode kernels read most:
  mask cache  keys, `--hip-max-mask-cache-token-size` tokens, read by the pruning stages;
  SA cache    keys and values, `--hip-max-sa-cache-token-size` tokens, read by the sparse attention.

A cache is indexed by pool slot (the page table maps a slot to a cache row), so it serves every
request in the batch and every prefix shared through the radix cache alike: concurrent requests
share the cache, and a shared document prefix is cached once.

Replacement is LRU, done after a layer on the decode steps that refresh the mask (`update`): the
kernels mark every token they read in the layer's `touch` array; tokens read but not cached are
inserted in place of the least recently used rows not read since the last update; read and cached
tokens get the current tick. Every step is a fixed-shape torch op or a kernel whose row count is read
on the device, so the update is captured in the decode CUDA graphs. A write to a slot (a new token,
or a freed slot given to another request) drops the slot from both caches.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch

from sgl.kernels.hip_offload import TokenCache, fill_rows, host_buffer
from sgl.runtime.mem.memory_pool import TokenToKVPool

logger = logging.getLogger(__name__)


class LruTokenCache:
    """One layer's GPU cache of `size` token rows over a pool of `slots` slots (see the module docstring)."""

    def __init__(self, size: int, slots: int, row_shape, store_dtype: torch.dtype, view_dtype: torch.dtype,
                 with_values: bool, device):
        if size < 1:
            raise ValueError(f"a HiP offload cache needs at least one token row, got {size}")
        self.size = size
        self.slots = slots
        self.view_dtype = view_dtype
        dev = torch.device(device)
        # page has one extra entry past the pool: the target of the fixed-shape scatters' unused lanes
        self.page = torch.full((slots + 1,), -1, dtype=torch.int32, device=dev)
        self.touch = torch.zeros(slots + 1, dtype=torch.int8, device=dev)
        self.bank_k = torch.zeros((size,) + tuple(row_shape), dtype=store_dtype, device=dev)
        self.bank_v = torch.zeros_like(self.bank_k) if with_values else None
        self.owner = torch.full((size,), -1, dtype=torch.int64, device=dev)
        self.last = torch.full((size + 1,), -1, dtype=torch.int64, device=dev)  # + the unused lanes' entry
        self.tick = torch.zeros(1, dtype=torch.int64, device=dev)
        self.count = torch.zeros(1, dtype=torch.int64, device=dev)
        self.hits = torch.zeros(1, dtype=torch.int64, device=dev)
        self.misses = torch.zeros(1, dtype=torch.int64, device=dev)
        self._lanes = torch.arange(size, device=dev)
        self._slot_ids = torch.arange(slots + 1, device=dev)
        # constants of the update, made here: a CUDA-graph capture allows no host-to-device copy
        self._c = torch.tensor(size, device=dev)
        self._minus_one = torch.tensor(-1, dtype=torch.int32, device=dev)

    def view(self) -> TokenCache:
        def v(t):
            return None if t is None else (t.view(self.view_dtype) if t.dtype != self.view_dtype else t)

        return TokenCache(self.page, self.touch, v(self.bank_k), v(self.bank_v))

    def gpu_bytes(self) -> int:
        tensors = [self.page, self.touch, self.bank_k, self.owner, self.last] + ([self.bank_v] if self.bank_v is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def invalidate(self, loc: torch.Tensor) -> None:
        self.page.index_fill_(0, loc.long(), -1)  # a scalar fill: no host copy inside a CUDA-graph capture

    def clear(self) -> None:
        self.page.fill_(-1)
        self.owner.fill_(-1)
        self.last.fill_(-1)
        self.touch.zero_()

    @torch.no_grad()
    def update(self, host_k: torch.Tensor, host_v: Optional[torch.Tensor] = None) -> None:
        """Insert the tokens read since the last update and not cached, LRU (see the module docstring)."""
        c, s = self.size, self.slots
        self.tick += 1
        touched = self.touch != 0
        page = self.page.long()
        hit = touched & (page >= 0)
        miss = touched & (page < 0)
        self.hits += hit.sum()
        n_miss = miss.sum()
        self.misses += n_miss
        # read and cached: used now
        self.last.index_put_((torch.where(hit, page, c),), self.tick.expand(s + 1))
        # rows not used since the last update, least recently used first
        last = self.last[:c]
        order = torch.sort(last, stable=True).indices
        n_free = (last < self.tick).sum()
        self.count.copy_(torch.minimum(torch.minimum(n_miss, n_free), self._c).reshape(1))
        # the first c missed slots, compacted in slot order: lane i takes order[i] if i < count
        rank = miss.cumsum(0) - 1
        lane = torch.where(miss & (rank < c), rank, c)
        tokens = torch.zeros(c + 1, dtype=torch.int64, device=self.page.device)
        tokens.index_put_((lane,), self._slot_ids)
        tokens = tokens[:c]
        valid = self._lanes < self.count
        victim = order
        old = self.owner[victim]
        # unlink the evicted rows' tokens (when the page still points at the row)
        unlink = valid & (old >= 0)
        old_safe = torch.where(unlink, old, s)
        still = self.page[old_safe].long() == victim
        self.page.index_put_((torch.where(unlink & still, old, s),), self._minus_one)
        # link the new tokens
        self.page.index_put_((torch.where(valid, tokens, s),), victim.to(torch.int32))
        self.owner.index_put_((victim,), torch.where(valid, tokens, old))
        self.last.index_put_((torch.where(valid, victim, c),), self.tick.expand(c))
        fill_rows(host_k, self.bank_k, tokens, victim, self.count)
        if self.bank_v is not None:
            fill_rows(host_v, self.bank_v, tokens, victim, self.count)
        self.touch.zero_()


class HipOffloadKVPool(TokenToKVPool):
    """TokenToKVPool whose K/V buffers are host memory (CUDA views of pinned pages on a GPU), with a
    mask cache and an SA cache per layer (see the module docstring)."""

    offloaded = True

    def __init__(self, size: int, dtype: torch.dtype, head_num: int, head_dim: int, layer_num: int, device,
                 mask_cache_tokens: int, sa_cache_tokens: int, dense_layers=()):
        self._host_owners: List[torch.Tensor] = []
        super().__init__(size, dtype, head_num, head_dim, layer_num, device)
        row = (head_num, head_dim)
        slots = size + 1
        # HiP's "dense" layers select twice the tokens: their caches are twice as large (as in the seed)
        scale = [2 if i in set(dense_layers) else 1 for i in range(layer_num)]
        make = lambda n, v: LruTokenCache(min(n, slots), slots, row, self.store_dtype, dtype, v, device)  # noqa: E731
        self.mask_caches = [make(mask_cache_tokens * f, False) for f in scale]
        self.sa_caches = [make(sa_cache_tokens * f, True) for f in scale]

    def _buffer(self, shape) -> torch.Tensor:
        owner, view = host_buffer(shape, self.store_dtype, self.device)
        self._host_owners.append(owner)
        return view

    def host_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host_owners)

    def gpu_bytes(self) -> int:
        return sum(c.gpu_bytes() for c in self.mask_caches + self.sa_caches)

    def set_kv_buffer(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        super().set_kv_buffer(layer_id, loc, k, v)
        self.mask_caches[layer_id].invalidate(loc)
        self.sa_caches[layer_id].invalidate(loc)

    def gather(self, layer_id: int, slots: torch.Tensor):
        """K and V rows of `slots` copied from host memory into GPU tensors (offloaded prefill)."""
        k = self.k_buffer[layer_id][slots]
        v = self.v_buffer[layer_id][slots]
        return self._view(k), self._view(v)

    def mask_cache(self, layer_id: int) -> TokenCache:
        return self.mask_caches[layer_id].view()

    def sa_cache(self, layer_id: int) -> TokenCache:
        return self.sa_caches[layer_id].view()

    def update_caches(self, layer_id: int) -> None:
        self.mask_caches[layer_id].update(self.k_buffer[layer_id])
        self.sa_caches[layer_id].update(self.k_buffer[layer_id], self.v_buffer[layer_id])

    def clear(self) -> None:
        super().clear()
        for c in self.mask_caches + self.sa_caches:
            c.clear()

    def cache_stats(self) -> Dict[str, float]:
        """Hit ratios of the caches since start (synchronizes: for logs and metrics)."""
        out = {}
        for name, caches in (("mask", self.mask_caches), ("sa", self.sa_caches)):
            hits = int(sum(c.hits for c in caches).item()) if caches else 0
            misses = int(sum(c.misses for c in caches).item()) if caches else 0
            out[f"{name}_cache_hits"] = hits
            out[f"{name}_cache_misses"] = misses
            out[f"{name}_cache_hit_ratio"] = hits / (hits + misses) if hits + misses else 0.0
        return out
