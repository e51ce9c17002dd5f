"""RouterArgs: every `python -m sgl.router` flag, with SGLang router names and defaults."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

from sgl.runtime.router.policy import POLICIES, PolicyConfig

_HELP = {
    "worker_urls": "URLs of the servers to balance over (http://host:port), each a `python -m sgl.launch_server`.",
    "host": "Host the router listens on.",
    "port": "Port the router listens on.",
    "policy": "Routing policy: " + ", ".join(POLICIES) + ".",
    "cache_threshold": "cache_aware: the least prefix-match ratio (matched / prompt characters) that routes to "
                       "the worker holding the prefix; below it the worker with the smallest tree gets the request.",
    "balance_abs_threshold": "cache_aware: the load is unbalanced when max - min in-flight requests exceeds this "
                             "(and the relative threshold holds); then the least-loaded worker is chosen.",
    "balance_rel_threshold": "cache_aware: the load is unbalanced when max in-flight exceeds this times the min "
                             "(and the absolute threshold holds).",
    "eviction_interval": "cache_aware: seconds between evictions of the approximate tree.",
    "max_tree_size": "cache_aware: characters each worker may own in the approximate tree; eviction trims the "
                     "least recently used beyond it.",
    "health_check_interval_secs": "Seconds between GET /health checks of every worker; a failing worker leaves "
                                  "the rotation and comes back once it passes.",
    "health_check_timeout_secs": "Seconds a worker's /health may take before it counts as failed.",
    "request_timeout_secs": "Seconds a proxied request may take in all (streams included).",
    "max_payload_size": "Largest request body in bytes; larger gets HTTP 413.",
    "log_level": "Logging level.",
}


@dataclass
class RouterArgs:
    worker_urls: List[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 30000
    policy: str = "cache_aware"
    cache_threshold: float = 0.5
    balance_abs_threshold: int = 32
    balance_rel_threshold: float = 1.0001
    eviction_interval: int = 60
    max_tree_size: int = 2 ** 24
    health_check_interval_secs: float = 10.0
    health_check_timeout_secs: float = 5.0
    request_timeout_secs: float = 1800.0
    max_payload_size: int = 256 * 1024 * 1024
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.worker_urls = [normalize_url(u) for u in self.worker_urls]
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {self.policy!r}")
        if not 0.0 <= self.cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {self.cache_threshold}")
        for name in ("eviction_interval", "max_tree_size", "health_check_interval_secs",
                     "health_check_timeout_secs", "request_timeout_secs", "max_payload_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(self.cache_threshold, self.balance_abs_threshold, self.balance_rel_threshold,
                            self.max_tree_size)

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.name == "worker_urls":
                parser.add_argument(flag, nargs="+", default=[], help=_HELP[f.name] + " (default: none)")
                continue
            default = getattr(cls, f.name)
            kw = {"choices": sorted(POLICIES)} if f.name == "policy" else {}
            parser.add_argument(flag, type=type(default), default=default,
                                help=f"{_HELP[f.name]} (default: {default})", **kw)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "RouterArgs":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def normalize_url(url: str, param: Optional[str] = "worker_urls") -> str:
    """A worker URL without its trailing slash; ValueError unless it is http(s)://host[:port]."""
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ValueError(f"{param}: a worker URL must look like http://host:port, got {url!r}")
    return url
