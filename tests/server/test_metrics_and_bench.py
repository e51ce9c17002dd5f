"""`/metrics` (Prometheus text format) and `python -m sgl.bench_serving` against the live server."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from sgltest.server_process import API_KEY

NAMES = ["num_running_reqs", "num_queue_reqs", "token_usage", "cache_hit_rate", "prompt_tokens_total",
         "generation_tokens_total", "num_requests_total"]
HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds"]


def scrape(server) -> dict:
    """{sample name with labels: value} from the exposition text; also checks its shape."""
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) sglang:\w+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def value(samples: dict, name: str, suffix: str = "") -> float:
    return next(v for k, v in samples.items() if k.startswith(f"sglang:{name}{suffix}{{"))


def test_metrics_count_requests(server):
    before = scrape(server)
    for name in NAMES:
        value(before, name)
    body = {"text": "Count: 1, 2,", "stream": True, "sampling_params": {"max_new_tokens": 5, "ignore_eos": True}}
    with server.post("/generate", json=body, stream=True) as r:
        assert r.status_code == 200
        list(r.iter_lines())
    after = scrape(server)
    assert value(after, "num_requests_total") == value(before, "num_requests_total") + 1
    assert value(after, "generation_tokens_total") == value(before, "generation_tokens_total") + 5
    assert value(after, "prompt_tokens_total") > value(before, "prompt_tokens_total")
    for name in HISTOGRAMS:
        assert value(after, name, "_count") > value(before, name, "_count")
    assert value(after, "inter_token_latency_seconds", "_count") >= value(before, "inter_token_latency_seconds", "_count") + 4
    assert 0.0 <= value(after, "cache_hit_rate") <= 1.0


def _bench(server, tmp_path, *args) -> dict:
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", "sgl.bench_serving", "--base-url", server.url, "--api-key", API_KEY,
           "--output-file", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Serving Benchmark Result" in done.stdout and "Median TTFT (ms)" in done.stdout
    return json.loads(out.read_text().splitlines()[-1])


def test_bench_serving_native_random(server, tmp_path):
    result = _bench(server, tmp_path, "--backend", "sgl", "--dataset-name", "random", "--num-prompts", "6",
                    "--random-input-len", "24", "--random-output-len", "6", "--random-range-ratio", "1.0",
                    "--request-rate", "20")
    assert result["completed"] == 6 and result["failed"] == 0
    assert result["total_output_tokens"] == 6 * 6 and result["total_input_tokens"] == 6 * 24
    assert 0 < result["mean_ttft_ms"] <= result["mean_e2e_latency_ms"]
    assert result["p99_itl_ms"] >= result["median_itl_ms"] > 0 and result["request_throughput"] > 0


def test_bench_serving_openai_shared_prefix(server, tmp_path):
    result = _bench(server, tmp_path, "--backend", "sgl-oai", "--dataset-name", "generated-shared-prefix",
                    "--gsp-num-groups", "2", "--gsp-prompts-per-group", "3", "--gsp-system-prompt-len", "32",
                    "--gsp-question-len", "8", "--gsp-output-len", "4", "--max-concurrency", "2")
    assert result["completed"] == 6 and result["total_output_tokens"] == 6 * 4
    assert result["total_input_tokens"] == 6 * 40 and result["max_concurrency"] == 2
    assert result["concurrency"] <= 2.05
