"""Prometheus metrics (`--enable-metrics`, route `/metrics`), in the text exposition format.

Request-level numbers (tokens, TTFT, inter-token latency, end-to-end latency) are observed in the
HTTP process: the tokenizer manager calls `observe(state, out)` for every update it receives.
Scheduler gauges (running / queued requests, token usage) are read from the scheduler when
Prometheus scrapes. Names follow SGLang's (`sglang:` prefix) so existing dashboards work.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Sequence

PREFIX = "sglang:"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                15.0, 20.0, 25.0, 30.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
               0.75, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 300.0, 600.0)


def _labels(labels: Dict[str, str], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items()]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _le(bound: str) -> str:
    return 'le="' + bound + '"'


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1  # counts are cumulative, as the format wants

    def render(self, labels: Dict[str, str]) -> List[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts):
            lines.append(f"{self.name}_bucket{_labels(labels, _le(_num(bound)))} {count}")
        lines.append(f"{self.name}_bucket{_labels(labels, _le('+Inf'))} {self.count}")
        lines.append(f"{self.name}_sum{_labels(labels)} {_num(self.sum)}")
        lines.append(f"{self.name}_count{_labels(labels)} {self.count}")
        return lines


def _scalar(name: str, kind: str, help_text: str, value: float, labels: Dict[str, str]) -> List[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{_labels(labels)} {_num(value)}"]


class MetricsCollector:
    def __init__(self, model_name: str, skip_rid_prefix: str = ""):
        self.labels = {"model_name": model_name}
        self.skip_rid_prefix = skip_rid_prefix
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generation_tokens = 0
        self.num_requests = 0
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between output tokens.", ITL_BUCKETS)
        self.tpot = Histogram(PREFIX + "time_per_output_token_seconds", "Mean time per output token of a request.",
                              ITL_BUCKETS)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "End-to-end request latency.", E2E_BUCKETS)

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
                gap = (now - last_time) / (tokens - last_tokens)
                for _ in range(tokens - last_tokens):
                    self.itl.observe(gap)
            state._metrics_last = (now, tokens)
        if out.finished_reason is not None:
            self._on_finish(state, out, now, tokens)

    def _on_finish(self, state: Any, out: Any, now: float, tokens: int) -> None:
        meta = out.meta or {}
        self.num_requests += 1
        self.prompt_tokens += meta.get("prompt_tokens", 0)
        self.cached_tokens += meta.get("cached_tokens", 0)
        self.generation_tokens += meta.get("completion_tokens", tokens)
        self.e2e.observe(now - state.created)
        first = getattr(state, "first_token_time", None)
        if tokens > 1 and first is not None:
            self.tpot.observe((now - first) / (tokens - 1))

    # ---- exposition -------------------------------------------------------------------------
    def render(self, internal: Dict[str, Any]) -> str:
        lines: List[str] = []
        total = max(internal.get("max_total_num_tokens", 0), 1)
        free = internal.get("available_kv_tokens", 0) + internal.get("evictable_tokens", 0)
        gauges = [
            ("num_running_reqs", "Running requests.", internal.get("num_running_reqs", 0)),
            ("num_queue_reqs", "Requests waiting in the queue.", internal.get("num_waiting_reqs", 0)),
            ("num_used_tokens", "KV slots in use by requests.", total - free),
            ("token_usage", "Fraction of the KV pool in use.", 1.0 - free / total),
            ("cache_hit_rate", "Prompt tokens served from the prefix cache / prompt tokens.",
             self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0),
        ]
        for name, text, value in gauges:
            lines += _scalar(PREFIX + name, "gauge", text, value, self.labels)
        counters = [
            ("prompt_tokens_total", "Prompt tokens processed.", self.prompt_tokens),
            ("generation_tokens_total", "Tokens generated.", self.generation_tokens),
            ("num_requests_total", "Requests finished.", self.num_requests),
        ]
        for name, text, value in counters:
            lines += _scalar(PREFIX + name, "counter", text, value, self.labels)
        for hist in (self.ttft, self.itl, self.tpot, self.e2e):
            lines += hist.render(self.labels)
        return "\n".join(lines) + "\n"
