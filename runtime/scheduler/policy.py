"""Waiting-queue ordering: lpm, dfs-weight (cache aware), fcfs, random.

A cache-aware policy becomes fcfs when the radix cache is disabled, and lpm also falls back to
fcfs on very long queues, where matching every request each round costs more than it saves.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, Set

from sgl.runtime.mem.radix_cache import RadixCache, TreeNode
from sgl.runtime.scheduler.req import Req

POLICIES = ("lpm", "dfs-weight", "fcfs", "random")
LPM_QUEUE_LIMIT = 128
# In-batch prefix sharing: a request with little cached prefix that shares a long prefix with an
# earlier waiting request waits one round, so the first one fills the cache for both.
IN_BATCH_CHECK_THRESHOLD = 32
IN_BATCH_HEAD = 2 * LPM_QUEUE_LIMIT  # on long queues, the requests checked for in-batch sharing
IN_BATCH_DEPRIORITIZE_THRESHOLD = 32


class SchedulePolicy:
    def __init__(self, policy: str, tree_cache, rng_seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"schedule_policy must be one of {POLICIES}, got {policy!r}")
        if getattr(tree_cache, "disable", False) and policy in ("lpm", "dfs-weight"):
            policy = "fcfs"
        self.policy = policy
        self.tree_cache = tree_cache
        self.rng = random.Random(rng_seed)

    def calc_priority(self, waiting: List[Req]) -> Set[str]:
        """Reorder `waiting` in place. Returns the ids of requests that should wait for a round
        (lpm): each shares a long prefix with an earlier waiting request that is not cached yet,
        so once that one is prefilled they find the prefix cached instead of computing it again."""
        policy = self.policy
        if policy == "lpm" and len(waiting) > LPM_QUEUE_LIMIT:
            # Too long to match every request each round: keep arrival order, but still let one
            # request per shared prefix go first so the others find it cached.
            # Only the head of the queue can be admitted this round, so only it is checked.
            deprioritized = self._in_batch_duplicates(waiting[:IN_BATCH_HEAD])
            waiting.sort(key=lambda r: r.rid in deprioritized)
            return deprioritized
        if policy == "lpm":
            return self._lpm(waiting)
        if policy == "dfs-weight":
            self._dfs_weight(waiting)
        elif policy == "random":
            self.rng.shuffle(waiting)
        return set()

    def _lpm(self, waiting: List[Req]) -> Set[str]:
        for req in waiting:
            req.init_next_round_input(self.tree_cache, rematch=not req.is_chunked)
        deprioritized = self._in_batch_duplicates(waiting)
        waiting.sort(key=lambda r: (r.rid in deprioritized, -len(r.prefix_indices)))
        return deprioritized

    def _in_batch_duplicates(self, waiting: List[Req]) -> set:
        scratch = _ScratchTree()
        out = set()
        for req in waiting:
            if len(req.prefix_indices) > IN_BATCH_CHECK_THRESHOLD:
                continue
            key = req.fill_ids or req.origin_input_ids + req.output_ids
            if scratch.shared_len(key) >= IN_BATCH_DEPRIORITIZE_THRESHOLD:
                out.add(req.rid)
            else:
                scratch.add(key)
        return out

    def _dfs_weight(self, waiting: List[Req]) -> None:
        by_node: Dict[int, List[Req]] = defaultdict(list)
        nodes: Dict[int, TreeNode] = {}
        for req in waiting:
            req.init_next_round_input(self.tree_cache, rematch=not req.is_chunked)
            node = req.last_node or self.tree_cache.root
            by_node[id(node)].append(req)
            nodes[id(node)] = node
        weight: Dict[int, int] = defaultdict(int)
        for key, reqs in by_node.items():
            node = nodes[key]
            while node is not None:
                weight[id(node)] += len(reqs)
                node = node.parent
        ordered: List[Req] = []
        self._dfs(self.tree_cache.root, weight, by_node, ordered)
        waiting[:] = ordered

    def _dfs(self, node: TreeNode, weight, by_node, out: List[Req]) -> None:
        out.extend(by_node.get(id(node), []))
        children = sorted(node.children.values(), key=lambda c: -weight.get(id(c), 0))
        for child in children:
            if weight.get(id(child), 0):
                self._dfs(child, weight, by_node, out)


class _ScratchTree:
    """A small token trie over the waiting queue, for in-batch prefix sharing."""

    def __init__(self):
        self.root: dict = {}

    def add(self, key: List[int]) -> None:
        node = self.root
        for tok in key[:IN_BATCH_DEPRIORITIZE_THRESHOLD]:
            node = node.setdefault(tok, {})

    def shared_len(self, key: List[int]) -> int:
        node, n = self.root, 0
        for tok in key[:IN_BATCH_DEPRIORITIZE_THRESHOLD]:
            if tok not in node:
                break
            node, n = node[tok], n + 1
        return n


__all__ = ["SchedulePolicy", "POLICIES", "RadixCache"]
