"""The router's workers: who is healthy, how loaded, and what each was sent.

A worker is healthy after a GET /health that answers 200; a failed check or a connection error on
a proxied request takes it out of the rotation (and out of the policy's tree: a worker that comes
back may have restarted with an empty cache); the next passing check admits it again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import aiohttp

logger = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    requests: int = 0
    failed: int = 0
    prompt_chars: int = 0
    matched_chars: int = 0  # the router's estimate of the prefix the worker had cached

    def as_dict(self) -> dict:
        rate = self.matched_chars / self.prompt_chars if self.prompt_chars else 0.0
        return {"requests": self.requests, "failed": self.failed, "prompt_chars": self.prompt_chars,
                "matched_chars": self.matched_chars, "cache_hit_rate": rate}


@dataclass
class Worker:
    url: str
    healthy: bool = False
    load: int = 0  # requests in flight through this router
    stats: WorkerStats = None

    def __post_init__(self) -> None:
        self.stats = self.stats or WorkerStats()

    def as_dict(self) -> dict:
        return {"url": self.url, "healthy": self.healthy, "load": self.load, **self.stats.as_dict()}


class WorkerPool:
    def __init__(self, urls: List[str], policy, check_timeout: float) -> None:
        self.workers: Dict[str, Worker] = {url: Worker(url) for url in urls}
        self.policy = policy
        self.check_timeout = check_timeout

    def healthy(self) -> List[str]:
        return [url for url, w in self.workers.items() if w.healthy]

    def loads(self) -> Dict[str, int]:
        return {url: w.load for url, w in self.workers.items()}

    def add(self, url: str) -> Worker:
        if url in self.workers:
            raise ValueError(f"url: worker {url} is already in the router")
        self.workers[url] = Worker(url)
        return self.workers[url]

    def remove(self, url: str) -> None:
        if url not in self.workers:
            raise ValueError(f"url: worker {url} is not in the router")
        del self.workers[url]
        self.policy.remove_worker(url)

    def mark_failed(self, url: str, reason: str) -> None:
        worker = self.workers.get(url)
        if worker is not None and worker.healthy:
            logger.warning("Worker %s left the rotation: %s", url, reason)
            worker.healthy = False
            self.policy.remove_worker(url)

    def mark_healthy(self, url: str) -> None:
        worker = self.workers.get(url)
        if worker is not None and not worker.healthy:
            logger.info("Worker %s is healthy: in the rotation", url)
            worker.healthy = True

    async def check(self, session: aiohttp.ClientSession, url: str) -> bool:
        """GET /health once; update the worker's state. True when it answered 200."""
        error = await self.probe(session, url, self.check_timeout)
        if error is None:
            self.mark_healthy(url)
        else:
            self.mark_failed(url, error)
        return error is None

    @staticmethod
    async def probe(session: aiohttp.ClientSession, url: str, timeout: float) -> Optional[str]:
        """None when GET url/health answers 200, else why not."""
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return None if resp.status == 200 else f"/health answered HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return f"/health failed: {type(exc).__name__}: {exc}"

    async def check_all(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self.check(session, url) for url in list(self.workers)))

    async def health_loop(self, session: aiohttp.ClientSession, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check_all(session)

    def stats(self) -> dict:
        prompt = sum(w.stats.prompt_chars for w in self.workers.values())
        matched = sum(w.stats.matched_chars for w in self.workers.values())
        return {"policy": self.policy.name, "workers": [w.as_dict() for w in self.workers.values()],
                "total_requests": sum(w.stats.requests for w in self.workers.values()),
                "prompt_chars": prompt, "matched_chars": matched,
                "cache_hit_rate": matched / prompt if prompt else 0.0}
