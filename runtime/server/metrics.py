"""Prometheus metrics (`--enable-metrics`, route `/metrics`), exported with `prometheus_client`.

Every metric is recorded in the HTTP process: the tokenizer manager calls `observe(state, out)`
for each update it receives (tokens, TTFT, inter-token and end-to-end latency), and the scheduler
gauges (running / queued requests, KV usage) are read from the scheduler when Prometheus scrapes.
One process records and serves, so a plain per-server registry does; prometheus_client's
multiprocess mode (shared files on disk) is not needed. The registry is our own, not the global
default, so that several servers or engines in one process never share or collide on metrics.
Names follow SGLang's (`sglang:` prefix, label `model_name`) so existing dashboards work.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque, Dict, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "sglang:"
# The classic text format; our names (with `:`) are valid in it, so every Prometheus version reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("model_name",)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                15.0, 20.0, 25.0, 30.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
               0.75, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 300.0, 600.0)
# gen_throughput: output tokens delivered over this many recent seconds.
THROUGHPUT_WINDOW_S = 10.0


class MetricsCollector:
    def __init__(self, model_name: str, skip_rid_prefix: str = ""):
        self.skip_rid_prefix = skip_rid_prefix
        self.registry = CollectorRegistry()
        self._model_name = model_name
        self.num_running_reqs = self._gauge("num_running_reqs", "Running requests.")
        self.num_queue_reqs = self._gauge("num_queue_reqs", "Requests waiting in the queue.")
        self.num_used_tokens = self._gauge("num_used_tokens", "KV slots in use by requests.")
        self.token_usage = self._gauge("token_usage", "Fraction of the KV pool in use.")
        self.cache_hit_rate = self._gauge(
            "cache_hit_rate", "Prompt tokens served from the prefix cache / prompt tokens (finished requests).")
        self.gen_throughput = self._gauge(
            "gen_throughput", f"Output tokens per second over the last {THROUGHPUT_WINDOW_S:g} s.")
        self.prompt_tokens = self._counter("prompt_tokens", "Prompt tokens processed.")
        self.cached_tokens = self._counter("cached_tokens", "Prompt tokens served from the prefix cache.")
        self.generation_tokens = self._counter("generation_tokens", "Tokens generated.")
        self.num_requests = self._counter("num_requests", "Requests finished.")
        self.ttft = self._histogram("time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = self._histogram("inter_token_latency_seconds", "Time between output tokens.", ITL_BUCKETS)
        self.tpot = self._histogram("time_per_output_token_seconds", "Mean time per output token of a request.",
                                    ITL_BUCKETS)
        self.e2e = self._histogram("e2e_request_latency_seconds", "End-to-end request latency.", E2E_BUCKETS)
        # The hit-rate gauge is a ratio of totals; plain ints avoid reading the counters' internals.
        self._prompt_total = 0
        self._cached_total = 0
        self._recent_tokens: Deque[Tuple[float, int]] = collections.deque()

    def _gauge(self, name: str, doc: str):
        return Gauge(PREFIX + name, doc, LABELS, registry=self.registry).labels(self._model_name)

    def _counter(self, name: str, doc: str):
        # prometheus_client appends `_total` to a counter's name in the exposition.
        return Counter(PREFIX + name, doc, LABELS, registry=self.registry).labels(self._model_name)

    def _histogram(self, name: str, doc: str, buckets):
        return Histogram(PREFIX + name, doc, LABELS, registry=self.registry, buckets=buckets).labels(
            self._model_name)

    # ---- the tokenizer manager's hook -------------------------------------------------------
    def observe(self, state: Any, out: Any) -> None:
        if self.skip_rid_prefix and out.rid.startswith(self.skip_rid_prefix):
            return
        now = time.perf_counter()
        tokens = len(out.output_ids)
        # The last seen (time, token count) lives on the request's own state object, so it goes
        # away with the request even when the request never finishes (client gone).
        last_time, last_tokens = getattr(state, "_metrics_last", (None, 0))
        if tokens > last_tokens:
            if last_time is None:
                self.ttft.observe(now - state.created)
            else:
                # Updates may carry several tokens (non-streaming requests report in blocks):
                # each token of the block gets the block's mean gap.
                gap = (now - last_time) / (tokens - last_tokens)
                for _ in range(tokens - last_tokens):
                    self.itl.observe(gap)
            self._recent_tokens.append((now, tokens - last_tokens))
            self._forget_before(now - THROUGHPUT_WINDOW_S)  # bounded memory even if never scraped
            state._metrics_last = (now, tokens)
        if out.finished_reason is not None:
            self._on_finish(state, out, now, tokens)

    def _on_finish(self, state: Any, out: Any, now: float, tokens: int) -> None:
        meta = out.meta or {}
        prompt, cached = meta.get("prompt_tokens", 0), meta.get("cached_tokens", 0)
        self.num_requests.inc()
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self.generation_tokens.inc(meta.get("completion_tokens", tokens))
        self._prompt_total += prompt
        self._cached_total += cached
        self.e2e.observe(now - state.created)
        first = getattr(state, "first_token_time", None)
        if tokens > 1 and first is not None:
            self.tpot.observe((now - first) / (tokens - 1))

    # ---- exposition -------------------------------------------------------------------------
    def render(self, internal: Dict[str, Any]) -> str:
        """The exposition text, with the scheduler gauges taken from `internal` (its state now)."""
        total = max(internal.get("max_total_num_tokens", 0), 1)
        free = internal.get("available_kv_tokens", 0) + internal.get("evictable_tokens", 0)
        self.num_running_reqs.set(internal.get("num_running_reqs", 0))
        self.num_queue_reqs.set(internal.get("num_waiting_reqs", 0))
        self.num_used_tokens.set(total - free)
        self.token_usage.set(1.0 - free / total)
        self.cache_hit_rate.set(self._cached_total / self._prompt_total if self._prompt_total else 0.0)
        self.gen_throughput.set(self._throughput(time.perf_counter()))
        return generate_latest(self.registry).decode()

    def _throughput(self, now: float) -> float:
        self._forget_before(now - THROUGHPUT_WINDOW_S)
        return sum(n for _, n in self._recent_tokens) / THROUGHPUT_WINDOW_S

    def _forget_before(self, t: float) -> None:
        while self._recent_tokens and self._recent_tokens[0][0] < t:
            self._recent_tokens.popleft()
