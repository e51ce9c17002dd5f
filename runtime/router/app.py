"""The router's HTTP app: a single server's routes, each proxied to a worker the policy picks.

Generation routes (`/generate`, `/v1/completions`, `/v1/chat/completions`, `/v1/embeddings`,
`/encode`) go to one worker chosen by the policy; informational GETs go to any healthy worker;
`/flush_cache` goes to all. The router's own routes: `/health`, `/add_worker`, `/remove_worker`,
`/list_workers`, `/get_router_stats` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import List, Optional

import aiohttp
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sgl.runtime.router.policy import make_policy
from sgl.runtime.router.proxy import WorkerFailed, forward_headers, send
from sgl.runtime.router.request_text import routing_text
from sgl.runtime.router.router_args import RouterArgs, normalize_url
from sgl.runtime.router.workers import WorkerPool
from sgl.runtime.server.errors import ApiError, install_exception_handlers
from sgl.runtime.server.metrics import CONTENT_TYPE

logger = logging.getLogger(__name__)

GENERATION_ROUTES = ("/generate", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/encode")
INFO_ROUTES = ("/v1/models", "/get_model_info", "/get_server_info", "/health_generate")


class Router:
    """The policy, the workers and the HTTP session; started and stopped with the app."""

    def __init__(self, args: RouterArgs) -> None:
        self.args = args
        self.policy = make_policy(args.policy, args.policy_config())
        self.pool = WorkerPool(args.worker_urls, self.policy, args.health_check_timeout_secs)
        self.session: Optional[aiohttp.ClientSession] = None
        self._tasks: List[asyncio.Task] = []
        self._metrics = CollectorRegistry()
        self._metrics.register(_RouterMetrics(self.pool))

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.args.request_timeout_secs)
        self.session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        await self.pool.check_all(self.session)
        self._tasks = [asyncio.create_task(self.pool.health_loop(self.session, self.args.health_check_interval_secs)),
                       asyncio.create_task(self._eviction_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.session is not None:
            await self.session.close()

    async def _eviction_loop(self) -> None:
        while True:
            await asyncio.sleep(self.args.eviction_interval)
            freed = self.policy.evict()
            if freed:
                logger.info("Evicted %d characters from the approximate tree", freed)

    async def route(self, request: Request, path: str) -> Response:
        raw = await request.body()
        if len(raw) > self.args.max_payload_size:
            raise ApiError(f"The request body is {len(raw)} bytes; the router takes at most "
                           f"{self.args.max_payload_size} (--max-payload-size)", 413)
        body = _parse_json(raw)
        text = routing_text(body)
        stream = isinstance(body, dict) and body.get("stream") is True
        headers = forward_headers(request.headers)
        tried = set()
        while True:
            healthy = [url for url in self.pool.healthy() if url not in tried]
            if not healthy:
                raise ApiError(_no_worker_message(tried), 503)
            decision = self.policy.select(text, healthy, self.pool.loads())
            worker = self.pool.workers[decision.url]
            try:
                response = await send(self.session, self.pool, worker, "POST", path, raw, headers, stream)
            except WorkerFailed:
                tried.add(decision.url)
                continue
            worker.stats.requests += 1
            worker.stats.prompt_chars += len(text)
            worker.stats.matched_chars += decision.matched_chars
            return response

    async def any_worker(self, request: Request, path: str) -> Response:
        """A GET answered by the first healthy worker that answers."""
        tried = set()
        while True:
            healthy = [url for url in self.pool.healthy() if url not in tried]
            if not healthy:
                raise ApiError(_no_worker_message(tried), 503)
            worker = self.pool.workers[healthy[0]]
            try:
                return await send(self.session, self.pool, worker, "GET", path, None,
                                  forward_headers(request.headers), stream=False)
            except WorkerFailed:
                tried.add(worker.url)

    async def flush_all(self, request: Request) -> Response:
        healthy = self.pool.healthy()
        if not healthy:
            raise ApiError(_no_worker_message(set()), 503)
        headers = forward_headers(request.headers)
        results = await asyncio.gather(*(self._flush_one(url, headers) for url in healthy))
        self.policy.reset()
        failed = {url: why for url, why in zip(healthy, results) if why}
        if failed:
            raise ApiError(f"Cache flush failed on {failed}", 502)
        return PlainTextResponse(f"Cache flushed on {len(healthy)} workers.\n")

    async def _flush_one(self, url: str, headers) -> Optional[str]:
        try:
            async with self.session.post(url + "/flush_cache", headers=headers) as resp:
                return None if resp.status == 200 else f"HTTP {resp.status}: {(await resp.text())[:200]}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def add_worker(self, url: Optional[str]) -> JSONResponse:
        url = normalize_url(_required_url(url), "url")
        self.pool.add(url)
        healthy = await self.pool.check(self.session, url)
        state = "healthy: in the rotation" if healthy else "not healthy yet: admitted once /health passes"
        return JSONResponse({"message": f"Added worker {url} ({state})", "url": url, "healthy": healthy})

    async def remove_worker(self, url: Optional[str]) -> JSONResponse:
        url = normalize_url(_required_url(url), "url")
        self.pool.remove(url)
        return JSONResponse({"message": f"Removed worker {url}", "url": url})

    def metrics_text(self) -> bytes:
        """Prometheus text of the per-worker counters and the router's cache estimate, read from
        the worker pool when scraped (prometheus_client's exposition)."""
        return generate_latest(self._metrics)


class _RouterMetrics:
    """A prometheus_client collector over the worker pool's own statistics (nothing is counted twice)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def collect(self):
        fams = [
            (CounterMetricFamily("sgl_router_requests", "Requests sent to the worker.", labels=["worker"]),
             lambda w: w.stats.requests),
            (CounterMetricFamily("sgl_router_failed_requests", "Requests that failed at the worker.", labels=["worker"]),
             lambda w: w.stats.failed),
            (CounterMetricFamily("sgl_router_prompt_chars", "Characters of routing text sent.", labels=["worker"]),
             lambda w: w.stats.prompt_chars),
            (CounterMetricFamily("sgl_router_matched_chars", "Characters the prefix tree matched.", labels=["worker"]),
             lambda w: w.stats.matched_chars),
            (GaugeMetricFamily("sgl_router_worker_load", "Requests in flight at the worker.", labels=["worker"]),
             lambda w: w.load),
            (GaugeMetricFamily("sgl_router_worker_healthy", "1 while the worker is in the rotation.", labels=["worker"]),
             lambda w: int(w.healthy)),
        ]
        for fam, value in fams:
            for w in self.pool.workers.values():
                fam.add_metric([w.url], value(w))
            yield fam
        yield GaugeMetricFamily("sgl_router_cache_hit_rate", "Matched / routed characters (the router's estimate).",
                                value=self.pool.stats()["cache_hit_rate"])


def _parse_json(raw: bytes):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(f"Invalid JSON body: {exc}", 400) from exc


def _required_url(url: Optional[str]) -> str:
    if not url:
        raise ApiError("url: the query parameter url (http://host:port) is required", 400, "url")
    return url


def _no_worker_message(tried) -> str:
    failed = f" ({', '.join(sorted(tried))} could not be reached)" if tried else ""
    return f"No healthy worker to take the request{failed}; see /list_workers."


def create_app(router: Router) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    app = FastAPI(title="sgl router", lifespan=lifespan)
    app.state.router = router
    _add_proxied_routes(app, router)
    _add_router_routes(app, router)
    install_exception_handlers(app, ("url",))
    return app


def _add_proxied_routes(app: FastAPI, router: Router) -> None:
    for path in GENERATION_ROUTES:
        app.add_api_route(path, _proxy(router.route, path), methods=["POST"])
    for path in INFO_ROUTES:
        app.add_api_route(path, _proxy(router.any_worker, path), methods=["GET"])

    async def flush_cache(request: Request) -> Response:
        return await router.flush_all(request)

    app.add_api_route("/flush_cache", flush_cache, methods=["GET", "POST"])


def _proxy(handler, path: str):
    async def endpoint(request: Request) -> Response:
        return await handler(request, path)

    endpoint.__name__ = "proxy_" + path.strip("/").replace("/", "_")
    return endpoint


def _add_router_routes(app: FastAPI, router: Router) -> None:
    @app.get("/health")
    async def health() -> Response:
        if not router.pool.healthy():
            raise ApiError(_no_worker_message(set()), 503)
        return Response(status_code=200)

    @app.post("/add_worker")
    async def add_worker(url: Optional[str] = None) -> JSONResponse:
        return await router.add_worker(url)

    @app.post("/remove_worker")
    async def remove_worker(url: Optional[str] = None) -> JSONResponse:
        return await router.remove_worker(url)

    @app.get("/list_workers")
    async def list_workers() -> JSONResponse:
        workers = [w.as_dict() for w in router.pool.workers.values()]
        return JSONResponse({"urls": list(router.pool.workers), "workers": workers})

    @app.get("/get_router_stats")
    async def router_stats() -> JSONResponse:
        return JSONResponse(router.pool.stats())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(router.metrics_text(), media_type=CONTENT_TYPE)
