"""`/metrics` read by Prometheus' own parser: types, histogram series, counters that move; and the
collector on its own (fed the updates a tokenizer manager would feed it)."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sgl.runtime.ipc.messages import StrOutput
from sgl.runtime.server.metrics import MetricsCollector
from sgl.runtime.tokenizer.tokenizer_manager import ReqState

COUNTERS = ["prompt_tokens", "cached_tokens", "generation_tokens", "num_requests"]
GAUGES = ["num_running_reqs", "num_queue_reqs", "num_used_tokens", "token_usage", "cache_hit_rate", "gen_throughput"]
HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds", "time_per_output_token_seconds",
              "e2e_request_latency_seconds"]


def families(text: str) -> dict:
    """{family name: family}, parsed the way Prometheus' client library parses a scrape."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, suffix: str = "", **labels) -> float:
    matches = [s.value for s in fams["sglang:" + family].samples
               if s.name == "sglang:" + family + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (family, suffix, labels, matches)
    return matches[0]


def check_shape(fams: dict, model: str) -> None:
    for name in COUNTERS:
        assert fams["sglang:" + name].type == "counter", name
    for name in GAUGES:
        assert fams["sglang:" + name].type == "gauge", name
    for name in HISTOGRAMS:
        fam = fams["sglang:" + name]
        assert fam.type == "histogram", name
        buckets = [s for s in fam.samples if s.name.endswith("_bucket")]
        bounds = [float(s.labels["le"]) for s in buckets]
        assert len(bounds) > 5 and bounds == sorted(bounds) and bounds[-1] == float("inf"), name
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), f"{name}: buckets must be cumulative"
        assert counts[-1] == sample(fams, name, "_count", model_name=model)
        assert sample(fams, name, "_sum", model_name=model) >= 0
    for fam in fams.values():
        assert all(s.labels.get("model_name") == model for s in fam.samples), fam.name


def test_metrics_parse_and_move_after_a_request(server, model_name):
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    before = families(r.text)
    check_shape(before, model_name)
    body = {"text": "Count: 1, 2,", "stream": True, "sampling_params": {"max_new_tokens": 6, "ignore_eos": True}}
    with server.post("/generate", json=body, stream=True) as resp:
        assert resp.status_code == 200
        list(resp.iter_lines())
    after = families(server.get("/metrics").text)
    check_shape(after, model_name)

    def moved(family: str, suffix: str = "_total") -> float:
        return (sample(after, family, suffix, model_name=model_name)
                - sample(before, family, suffix, model_name=model_name))

    assert moved("num_requests") == 1 and moved("generation_tokens") == 6
    assert moved("prompt_tokens") > 0
    for name in HISTOGRAMS:
        assert moved(name, "_count") >= 1, name
    assert moved("inter_token_latency_seconds", "_count") >= 5
    assert sample(after, "gen_throughput", model_name=model_name) > 0


# ---- the collector alone ------------------------------------------------------------------------
def _out(rid: str, n_tokens: int, finished: bool = False) -> StrOutput:
    meta = {"prompt_tokens": 10, "cached_tokens": 4, "completion_tokens": n_tokens} if finished else {}
    return StrOutput(rid, "x" * n_tokens, list(range(n_tokens)), {"type": "length"} if finished else None, meta)


def test_collector_records_one_request():
    metrics = MetricsCollector("m")
    state = ReqState()
    state.created -= 0.5  # the request was sent half a second ago
    for n in (1, 2, 3):
        metrics.observe(state, _out("r1", n))
        state.first_token_time = state.first_token_time or time.perf_counter()
    metrics.observe(state, _out("r1", 5, finished=True))
    internal = {"max_total_num_tokens": 100, "available_kv_tokens": 70, "evictable_tokens": 10,
                "num_running_reqs": 2, "num_waiting_reqs": 3}
    fams = families(metrics.render(internal))
    check_shape(fams, "m")
    assert sample(fams, "num_requests", "_total") == 1 and sample(fams, "generation_tokens", "_total") == 5
    assert sample(fams, "prompt_tokens", "_total") == 10 and sample(fams, "cached_tokens", "_total") == 4
    assert sample(fams, "cache_hit_rate") == 0.4
    assert sample(fams, "num_used_tokens") == 20 and sample(fams, "token_usage") == pytest.approx(0.2)
    assert sample(fams, "num_running_reqs") == 2 and sample(fams, "num_queue_reqs") == 3
    assert sample(fams, "time_to_first_token_seconds", "_count") == 1
    assert sample(fams, "time_to_first_token_seconds", "_sum") >= 0.5
    # First token, then 1 + 1 + 2 more tokens: four inter-token gaps.
    assert sample(fams, "inter_token_latency_seconds", "_count") == 4
    assert sample(fams, "e2e_request_latency_seconds", "_count") == 1
    assert sample(fams, "gen_throughput") > 0


def test_collectors_do_not_share_a_registry():
    # Two servers / engines in one process: separate registries, no duplicate-name error.
    a, b = MetricsCollector("a"), MetricsCollector("b")
    a.observe(ReqState(), _out("r", 1, finished=True))
    empty = {"max_total_num_tokens": 1}
    assert sample(families(a.render(empty)), "num_requests", "_total", model_name="a") == 1
    assert sample(families(b.render(empty)), "num_requests", "_total", model_name="b") == 0


def test_health_check_requests_are_not_counted():
    metrics = MetricsCollector("m", skip_rid_prefix="HEALTH_")
    metrics.observe(ReqState(), _out("HEALTH_1", 1, finished=True))
    assert sample(families(metrics.render({})), "num_requests", "_total") == 0
