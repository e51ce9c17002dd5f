"""ChunkCache: the prefix-cache interface without sharing (`--disable-radix-cache`).

Nothing is reused across requests; a chunked-prefill request keeps its own earlier chunks through
its `prefix_indices`, and a finished request's KV is freed at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch

if TYPE_CHECKING:
    from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
    from sgl.runtime.scheduler.req import Req


class ChunkCache:
    disable = True

    def __init__(self, req_to_token_pool: "ReqToTokenPool", token_to_kv_pool: "TokenToKVPool"):
        self.req_to_token_pool = req_to_token_pool
        self.token_to_kv_pool = token_to_kv_pool
        self.root = None
        self._empty = torch.empty(0, dtype=torch.int64, device=token_to_kv_pool.device)

    def reset(self) -> None:
        pass

    def match_prefix(self, key: List[int]) -> Tuple[torch.Tensor, None]:
        return self._empty, None

    def insert(self, key: List[int], value: torch.Tensor) -> int:
        return 0

    def cache_finished_req(self, req: "Req", token_ids: Optional[List[int]] = None) -> None:
        kv = self.req_to_token_pool.req_to_token[req.req_pool_idx, : req.kv_allocated_len].to(torch.int64)
        self.token_to_kv_pool.free(kv)
        self.req_to_token_pool.free(req.req_pool_idx)
        req.req_pool_idx = None

    def cache_unfinished_req(self, req: "Req") -> None:
        kv = self.req_to_token_pool.req_to_token[req.req_pool_idx, : len(req.fill_ids)].to(torch.int64)
        req.prefix_indices = kv

    def shared_len(self, node: Optional[object]) -> int:
        return 0  # nothing is shared: a finished request frees all it holds

    def inc_lock_ref(self, node: Optional[object]) -> None:
        pass

    def dec_lock_ref(self, node: Optional[object]) -> None:
        pass

    def evict(self, num_tokens: int, free_fn=None) -> int:
        return 0

    def evictable_size(self) -> int:
        return 0

    def protected_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0

    def check_integrity(self) -> None:
        pass
