"""The prefix-cache contract the scheduler relies on, and the registry of implementations.

`RadixCache` shares KV between requests with common prompt prefixes (RadixAttention);
`ChunkCache` (`--disable-radix-cache`) implements the same contract without sharing. Slots a
request matched are locked (`inc_lock_ref`) while it runs, so eviction never frees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Protocol, Tuple

import torch

from sgl.runtime.mem.chunk_cache import ChunkCache
from sgl.runtime.mem.radix_cache import RadixCache

if TYPE_CHECKING:
    from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
    from sgl.runtime.scheduler.req import Req
    from sgl.runtime.server_args import ServerArgs


class PrefixCache(Protocol):
    disable: bool  # True when nothing is shared (requests keep and free their own slots)

    def reset(self) -> None: ...

    def match_prefix(self, key: List[int]) -> Tuple[torch.Tensor, object]:
        """KV slots of the longest cached prefix of `key`, and the node that ends it."""
        ...

    def insert(self, key: List[int], value: torch.Tensor) -> int:
        """Cache `value` (slots) under `key`; returns how many leading tokens were cached already."""
        ...

    def cache_finished_req(self, req: "Req", token_ids: Optional[List[int]] = None) -> None: ...

    def cache_unfinished_req(self, req: "Req") -> None: ...

    def shared_len(self, node: object) -> int: ...

    def inc_lock_ref(self, node: object) -> None: ...

    def dec_lock_ref(self, node: object) -> None: ...

    def evict(self, num_tokens: int, free_fn: Optional[Callable[[torch.Tensor], None]] = None) -> int: ...

    def evictable_size(self) -> int: ...

    def protected_size(self) -> int: ...

    def total_size(self) -> int: ...

    def check_integrity(self) -> None: ...


PREFIX_CACHES: Dict[str, Callable[["ReqToTokenPool", "TokenToKVPool"], PrefixCache]] = {
    "radix": RadixCache,
    "chunk": ChunkCache,
}


def create_prefix_cache(server_args: "ServerArgs", req_to_token_pool: "ReqToTokenPool",
                        token_to_kv_pool: "TokenToKVPool") -> PrefixCache:
    kind = "chunk" if server_args.disable_radix_cache else "radix"
    return PREFIX_CACHES[kind](req_to_token_pool, token_to_kv_pool)
