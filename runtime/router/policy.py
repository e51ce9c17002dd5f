"""Routing policies: which worker gets a request (`--policy`).

A policy sees the request's routing text, the healthy workers and their loads (requests in flight
through this router) and returns a `Decision`. Policies are a Protocol with a registry keyed by the
flag value. `cache_aware` is SGLang's router policy:

* when the load is unbalanced (max - min > `balance_abs_threshold` and
  max > `balance_rel_threshold` * min) the least-loaded worker wins (shortest queue);
* otherwise the worker whose approximate tree holds the longest prefix of the text wins when the
  match covers at least `cache_threshold` of the text (ties: the less loaded);
* otherwise the worker with the smallest tree (the least cached) wins, to spread new prefixes.

Every decision is recorded in the tree, so the next request with the same prefix follows it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Protocol, Sequence

from sgl.runtime.router.prefix_tree import PrefixTree


@dataclass(frozen=True)
class Decision:
    url: str
    matched_chars: int = 0  # the router's estimate of the prefix the worker has cached
    reason: str = ""  # "cache_hit", "smallest_tree", "shortest_queue", "round_robin", "random"


@dataclass
class PolicyConfig:
    cache_threshold: float = 0.5
    balance_abs_threshold: int = 32
    balance_rel_threshold: float = 1.0001
    max_tree_size: int = 2 ** 24


class Policy(Protocol):
    name: str

    def select(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision: ...

    def remove_worker(self, url: str) -> None: ...

    def evict(self) -> int: ...

    def reset(self) -> None: ...


class _Stateless:
    """Policies that keep nothing per worker."""

    def remove_worker(self, url: str) -> None:
        pass

    def evict(self) -> int:
        return 0

    def reset(self) -> None:
        pass


class RoundRobinPolicy(_Stateless):
    name = "round_robin"

    def __init__(self, config: PolicyConfig) -> None:
        self._counter = itertools.count()

    def select(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision:
        return Decision(workers[next(self._counter) % len(workers)], reason="round_robin")


class RandomPolicy(_Stateless):
    name = "random"

    def __init__(self, config: PolicyConfig) -> None:
        self._rng = random.Random()

    def select(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision:
        return Decision(self._rng.choice(list(workers)), reason="random")


def least_loaded(workers: Sequence[str], loads: Mapping[str, int]) -> str:
    """The worker with the fewest requests in flight (the first listed among equals)."""
    return min(workers, key=lambda url: loads.get(url, 0))


class ShortestQueuePolicy(_Stateless):
    name = "shortest_queue"

    def __init__(self, config: PolicyConfig) -> None:
        pass

    def select(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision:
        return Decision(least_loaded(workers, loads), reason="shortest_queue")


def is_unbalanced(workers: Sequence[str], loads: Mapping[str, int], abs_threshold: int, rel_threshold: float) -> bool:
    values = [loads.get(url, 0) for url in workers]
    high, low = max(values), min(values)
    return high - low > abs_threshold and high > rel_threshold * low


class CacheAwarePolicy:
    name = "cache_aware"

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.tree = PrefixTree()

    def select(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision:
        cfg = self.config
        if is_unbalanced(workers, loads, cfg.balance_abs_threshold, cfg.balance_rel_threshold):
            url = least_loaded(workers, loads)
            decision = Decision(url, self.tree.tenant_match(text, url), "shortest_queue")
        else:
            decision = self._by_cache(text, workers, loads)
        self.tree.insert(text, decision.url)
        return decision

    def _by_cache(self, text: str, workers: Sequence[str], loads: Mapping[str, int]) -> Decision:
        matched, owners = self.tree.match(text, workers)
        if owners and text and matched / len(text) >= self.config.cache_threshold:
            return Decision(least_loaded([u for u in workers if u in owners], loads), matched, "cache_hit")
        url = min(workers, key=lambda u: (self.tree.sizes.get(u, 0), loads.get(u, 0)))
        return Decision(url, self.tree.tenant_match(text, url), "smallest_tree")

    def remove_worker(self, url: str) -> None:
        self.tree.remove_tenant(url)

    def evict(self) -> int:
        return self.tree.evict(self.config.max_tree_size)

    def reset(self) -> None:
        self.tree = PrefixTree()


POLICIES: Dict[str, Callable[[PolicyConfig], Policy]] = {
    "cache_aware": CacheAwarePolicy,
    "round_robin": RoundRobinPolicy,
    "random": RandomPolicy,
    "shortest_queue": ShortestQueuePolicy,
}


def make_policy(name: str, config: PolicyConfig) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}")
    return POLICIES[name](config)
