"""The router's approximate radix tree: which request texts each worker has been sent.

The router never sees a worker's real KV cache; it remembers the prompt texts it routed to each
worker (a "tenant" of the tree) and assumes the worker still caches them. The tree is a compressed
character trie: an edge holds a string, a node records, per tenant, when that tenant last used it.
Ownership is prefix-closed: a tenant that owns a node owns every ancestor, so a tenant's match is
the deepest node it owns along the text's path. A tenant's size is the number of characters it
owns; `evict` trims each tenant to a bound by dropping its least recently used leaves first.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Dict, Iterable, Optional, Set, Tuple


class _Node:
    __slots__ = ("label", "parent", "children", "tenants")

    def __init__(self, label: str, parent: Optional["_Node"]) -> None:
        self.label = label
        self.parent = parent
        self.children: Dict[str, _Node] = {}  # first character of the child's label -> child
        self.tenants: Dict[str, int] = {}  # tenant -> logical time of its last use


def _common_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixTree:
    """Prompt texts per tenant (worker URL), with longest-prefix match and per-tenant LRU eviction."""

    def __init__(self) -> None:
        self.root = _Node("", None)
        self.sizes: Dict[str, int] = {}  # tenant -> characters owned
        self._clock = itertools.count(1)

    # -- insert -----------------------------------------------------------------------------------
    def insert(self, text: str, tenant: str) -> None:
        """Record that `tenant` was sent `text` (touches the whole path)."""
        now = next(self._clock)
        self.sizes.setdefault(tenant, 0)
        node, rest = self.root, text
        while rest:
            child = node.children.get(rest[0])
            if child is None:
                child = _Node(rest, node)
                node.children[rest[0]] = child
            else:
                common = _common_len(rest, child.label)
                if common < len(child.label):
                    child = self._split(child, common)
            self._own(child, tenant, now)
            node, rest = child, rest[len(child.label):]

    def _own(self, node: _Node, tenant: str, now: int) -> None:
        if tenant not in node.tenants:
            self.sizes[tenant] += len(node.label)
        node.tenants[tenant] = now

    def _split(self, child: _Node, at: int) -> _Node:
        """Cut `child`'s edge after `at` characters; returns the new upper node (same owners)."""
        parent = child.parent
        upper = _Node(child.label[:at], parent)
        upper.tenants = dict(child.tenants)
        parent.children[upper.label[0]] = upper
        child.label = child.label[at:]
        child.parent = upper
        upper.children[child.label[0]] = child
        return upper

    # -- match ------------------------------------------------------------------------------------
    def match(self, text: str, candidates: Optional[Iterable[str]] = None) -> Tuple[int, Set[str]]:
        """(length of the longest prefix of `text` some candidate owns, the candidates owning it).

        With no match the length is 0 and the set is empty."""
        allowed = None if candidates is None else set(candidates)
        best_len, best = 0, set()
        node, rest, depth = self.root, text, 0
        while rest:
            child = node.children.get(rest[0])
            if child is None:
                break
            owners = set(child.tenants) if allowed is None else allowed & child.tenants.keys()
            if not owners:
                break
            common = _common_len(rest, child.label)
            best_len, best = depth + common, owners
            if common < len(child.label):
                break
            node, rest, depth = child, rest[common:], depth + common
        return best_len, best

    def tenant_match(self, text: str, tenant: str) -> int:
        """Length of the longest prefix of `text` that `tenant` owns."""
        return self.match(text, (tenant,))[0]

    # -- removal and eviction ---------------------------------------------------------------------
    def remove_tenant(self, tenant: str) -> None:
        """Forget everything `tenant` was sent (a worker removed or restarted)."""
        for node in list(self._owned(tenant)):
            self._disown(node, tenant)
        self.sizes.pop(tenant, None)

    def evict(self, max_size: int) -> int:
        """Trim every tenant to at most `max_size` characters, least recently used leaves first.
        Returns the number of characters evicted."""
        return sum(self._evict_tenant(t, max_size) for t in list(self.sizes) if self.sizes[t] > max_size)

    def _evict_tenant(self, tenant: str, max_size: int) -> int:
        heap = [(n.tenants[tenant], id(n), n) for n in self._owned(tenant) if self._is_leaf_of(n, tenant)]
        heapq.heapify(heap)
        freed = 0
        while heap and self.sizes[tenant] > max_size:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            freed += len(node.label)
            self._disown(node, tenant)
            if parent is not self.root and self._is_leaf_of(parent, tenant):
                heapq.heappush(heap, (parent.tenants[tenant], id(parent), parent))
        return freed

    def _disown(self, node: _Node, tenant: str) -> None:
        if node.tenants.pop(tenant, None) is not None:
            self.sizes[tenant] -= len(node.label)
        # Nobody owns it: by prefix-closure nobody owns its descendants either, so they are gone.
        if not node.tenants and not node.children and node.parent is not None:
            del node.parent.children[node.label[0]]

    def _owned(self, tenant: str):
        """Nodes `tenant` owns, children before parents."""
        stack, order = [self.root], []
        while stack:
            node = stack.pop()
            for child in node.children.values():
                if tenant in child.tenants:
                    order.append(child)
                    stack.append(child)
        return reversed(order)

    @staticmethod
    def _is_leaf_of(node: _Node, tenant: str) -> bool:
        return tenant in node.tenants and not any(tenant in c.tenants for c in node.children.values())

    # -- checks -----------------------------------------------------------------------------------
    def check_integrity(self) -> None:
        """Sizes equal the owned characters; ownership is prefix-closed; no ownerless node remains."""
        counted: Dict[str, int] = {t: 0 for t in self.sizes}
        stack = [self.root]
        while stack:
            node = stack.pop()
            for key, child in node.children.items():
                assert child.label and child.label[0] == key and child.parent is node
                assert child.tenants, "a node nobody owns was left in the tree"
                if node is not self.root:
                    assert child.tenants.keys() <= node.tenants.keys(), "ownership is not prefix-closed"
                for t in child.tenants:
                    counted[t] = counted.get(t, 0) + len(child.label)
                stack.append(child)
        assert counted == self.sizes, (counted, self.sizes)
