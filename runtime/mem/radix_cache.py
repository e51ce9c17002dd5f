"""RadixAttention's prefix cache: a radix tree over token ids whose nodes hold KV slot indices.

Contract shared with `ChunkCache` (the no-sharing variant): `match_prefix`, `insert`,
`cache_finished_req`, `cache_unfinished_req`, `inc_lock_ref / dec_lock_ref`, `evict(n)`,
`evictable_size`, `protected_size`, `total_size`, `reset`, `check_integrity`.

Locked nodes (lock_ref > 0, i.e. on the path of a running request) are never evicted; eviction
removes least-recently-used leaves first. A finished request is cached without its last token,
whose KV was never computed.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import torch

if TYPE_CHECKING:
    from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool
    from sgl.runtime.scheduler.req import Req

_tick = itertools.count()


class TreeNode:
    __slots__ = ("children", "parent", "key", "value", "lock_ref", "last_access_time", "hit_count")

    def __init__(self, parent: Optional["TreeNode"] = None):
        self.children: Dict[int, TreeNode] = {}
        self.parent = parent
        self.key: List[int] = []
        self.value: Optional[torch.Tensor] = None
        self.lock_ref = 0
        self.last_access_time = next(_tick)
        self.hit_count = 0

    def touch(self) -> None:
        self.last_access_time = next(_tick)

    def __lt__(self, other: "TreeNode") -> bool:
        return self.last_access_time < other.last_access_time


def _common_len(a: List[int], b: List[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    def __init__(self, req_to_token_pool: "ReqToTokenPool", token_to_kv_pool: "TokenToKVPool", disable: bool = False):
        self.req_to_token_pool = req_to_token_pool
        self.token_to_kv_pool = token_to_kv_pool
        self.disable = disable
        self.device = token_to_kv_pool.device
        self.reset()

    def reset(self) -> None:
        self.root = TreeNode()
        self.root.value = torch.empty(0, dtype=torch.int64, device=self.device)
        self.root.lock_ref = 1
        self._evictable = 0
        self._protected = 0

    # ---- lookup ---------------------------------------------------------------------------
    def match_prefix(self, key: List[int]) -> Tuple[torch.Tensor, TreeNode]:
        """Longest cached prefix of `key`: (KV slots, the node ending exactly at the match)."""
        if self.disable or not key:
            return self.root.value, self.root
        values: List[torch.Tensor] = []
        node = self.root
        node.touch()
        while key and key[0] in node.children:
            child = node.children[key[0]]
            child.touch()
            n = _common_len(child.key, key)
            if n < len(child.key):
                child = self._split(child, n)
            values.append(child.value)
            node, key = child, key[n:]
        if not values:
            return self.root.value, node
        return torch.cat(values), node

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Split `child` after its first n tokens; return the new upper node."""
        upper = TreeNode(child.parent)
        upper.key, upper.value = child.key[:n], child.value[:n]
        upper.lock_ref = child.lock_ref
        upper.children = {child.key[n]: child}
        child.parent.children[upper.key[0]] = upper
        child.parent = upper
        child.key, child.value = child.key[n:], child.value[n:]
        return upper

    # ---- insertion ------------------------------------------------------------------------
    def insert(self, key: List[int], value: torch.Tensor) -> int:
        """Insert key -> value; return how many leading tokens were already cached."""
        if self.disable:
            return 0
        node, matched = self.root, 0
        while key:
            child = node.children.get(key[0])
            if child is None:
                self._add_leaf(node, key, value)
                return matched
            child.touch()
            n = _common_len(child.key, key)
            if n < len(child.key):
                child = self._split(child, n)
            matched += n
            node, key, value = child, key[n:], value[n:]
        return matched

    def _add_leaf(self, parent: TreeNode, key: List[int], value: torch.Tensor) -> None:
        leaf = TreeNode(parent)
        leaf.key, leaf.value = list(key), value.clone()
        parent.children[key[0]] = leaf
        self._evictable += len(key)

    # ---- request hooks --------------------------------------------------------------------
    def cache_finished_req(self, req: "Req", token_ids: Optional[List[int]] = None) -> None:
        """Cache a finished request's KV (all but the last token, or the given leading
        `token_ids`) and release its slots and request row."""
        if token_ids is None:
            all_ids = req.origin_input_ids + req.output_ids
            # An aborted chunked prefill holds KV for only part of its prompt.
            token_ids = all_ids[: min(len(all_ids) - 1, req.kv_allocated_len)]
        all_kv = self.req_to_token_pool.req_to_token[req.req_pool_idx, : req.kv_allocated_len].to(torch.int64)
        kv = all_kv[: len(token_ids)]
        # The request's own slots past the cached tokens (e.g. a prompt that produced no output) are
        # freed too; slots of its matched prefix belong to the tree, even past `token_ids`.
        own_from = len(req.prefix_indices) if not self.disable else 0
        self.token_to_kv_pool.free(all_kv[max(len(token_ids), own_from) :])
        if self.disable:
            self.token_to_kv_pool.free(kv)
        else:
            new_prefix_len = self.insert(token_ids, kv)
            self.token_to_kv_pool.free(kv[len(req.prefix_indices) : new_prefix_len])
            self.dec_lock_ref(req.last_node)
        self.req_to_token_pool.free(req.req_pool_idx)
        req.req_pool_idx = None

    def cache_unfinished_req(self, req: "Req") -> None:
        """Cache the filled part of a request still in progress (chunked prefill)."""
        if self.disable:
            return
        token_ids = req.fill_ids
        kv = self.req_to_token_pool.req_to_token[req.req_pool_idx, : len(token_ids)].to(torch.int64)
        new_prefix_len = self.insert(token_ids, kv)
        self.token_to_kv_pool.free(kv[len(req.prefix_indices) : new_prefix_len])
        new_indices, new_node = self.match_prefix(token_ids)
        self.req_to_token_pool.write(req.req_pool_idx, len(req.prefix_indices), new_indices[len(req.prefix_indices) :])
        self.dec_lock_ref(req.last_node)
        self.inc_lock_ref(new_node)
        req.prefix_indices, req.last_node = new_indices, new_node

    # ---- locking --------------------------------------------------------------------------
    def shared_len(self, node: Optional[TreeNode]) -> int:
        """Tokens on the path to `node` that another holder also locks: they stay in use when the
        holder of `node` finishes (the rest of the path becomes evictable then)."""
        if self.disable or node is None:
            return 0
        shared = 0
        while node is not self.root:
            if node.lock_ref > 1:
                shared += len(node.key)
            node = node.parent
        return shared

    def inc_lock_ref(self, node: Optional[TreeNode]) -> None:
        if self.disable or node is None:
            return
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.key)
                self._protected += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: Optional[TreeNode]) -> None:
        if self.disable or node is None:
            return
        while node is not self.root:
            if node.lock_ref == 1:
                self._evictable += len(node.key)
                self._protected -= len(node.key)
            node.lock_ref -= 1
            node = node.parent

    # ---- eviction -------------------------------------------------------------------------
    def evict(self, num_tokens: int, free_fn: Optional[Callable[[torch.Tensor], None]] = None) -> int:
        """Free at least `num_tokens` unlocked cached slots, LRU leaves first; return the count."""
        if self.disable:
            return 0
        free_fn = free_fn or self.token_to_kv_pool.free
        heap = [n for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_tokens and heap:
            leaf = heapq.heappop(heap)
            free_fn(leaf.value)
            freed += len(leaf.key)
            parent = self._delete_leaf(leaf)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, parent)
        return freed

    def _delete_leaf(self, leaf: TreeNode) -> TreeNode:
        del leaf.parent.children[leaf.key[0]]
        self._evictable -= len(leaf.key)
        return leaf.parent

    def _leaves(self) -> List[TreeNode]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if not node.children and node is not self.root:
                out.append(node)
            stack.extend(node.children.values())
        return out

    # ---- accounting -----------------------------------------------------------------------
    def evictable_size(self) -> int:
        return self._evictable

    def protected_size(self) -> int:
        return self._protected

    def total_size(self) -> int:
        total, stack = 0, [self.root]
        while stack:
            node = stack.pop()
            total += len(node.key)
            stack.extend(node.children.values())
        return total

    def check_integrity(self) -> None:
        """Recompute sizes and lock refs from the tree; raise AssertionError on any mismatch."""
        evictable = protected = 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            for first, child in node.children.items():
                assert child.parent is node and child.key and child.key[0] == first, "broken tree link"
                assert len(child.key) == len(child.value), "key/value length mismatch"
                assert child.lock_ref >= 0, "negative lock_ref"
                stack.append(child)
            if node is not self.root:
                if node.lock_ref > 0:
                    protected += len(node.key)
                else:
                    evictable += len(node.key)
        assert evictable == self._evictable, f"evictable {self._evictable} != recomputed {evictable}"
        assert protected == self._protected, f"protected {self._protected} != recomputed {protected}"

    def pretty_print(self) -> str:
        lines: List[str] = []

        def walk(node: TreeNode, depth: int) -> None:
            for child in node.children.values():
                lines.append(f"{'  ' * depth}{len(child.key)} {child.key[:8]} lock={child.lock_ref}")
                walk(child, depth + 1)

        walk(self.root, 0)
        return "\n".join(lines)
