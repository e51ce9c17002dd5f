"""`python -m sgl.bench_serving`: load-test a running server the way SGLang's bench_serving does.

Requests arrive as a Poisson process (`--request-rate`, inf = all at once), optionally capped at
`--max-concurrency` in flight. Prompts are made locally as token ids (datasets `random` and
`generated-shared-prefix`), so no tokenizer or download is needed. Backends:
  sgl      the native streaming `/generate` with `input_ids`
  sgl-oai  streaming `/v1/completions` on any OpenAI-compatible server (token-id prompts)
Prints request / token throughput and mean, median, p99 of TTFT, TPOT, ITL and end-to-end latency,
and appends the numbers as one JSON line to `--output-file`.

Example:
  python -m sgl.bench_serving --backend sgl --port 30000 --dataset-name random \
      --random-input-len 1024 --random-output-len 128 --num-prompts 200 --request-rate 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional

from sgl.runtime.bench.datasets import BenchRequest, add_dataset_args, make_requests

DEFAULT_VOCAB = 32000  # when the server does not report one; every common model's vocab is larger


@dataclass
class RequestResult:
    prompt_len: int
    success: bool = False
    output_len: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: List[float] = field(default_factory=list)
    error: str = ""


# ---- one request per backend ------------------------------------------------------------------------
class StreamTimer:
    """Records TTFT and inter-token gaps from the arrival times of stream events carrying output."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: Optional[float] = None
        self.ttft = 0.0
        self.itl: List[float] = []

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.ttft = now - self.start
        else:
            self.itl.append(now - self.last)
        self.last = now

    def finish(self, result: RequestResult, output_len: int) -> RequestResult:
        result.success, result.output_len = True, output_len
        result.ttft, result.itl, result.latency = self.ttft, self.itl, time.perf_counter() - self.start
        return result


async def sse_events(response) -> AsyncIterator[Dict[str, Any]]:
    async for raw in response.content:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        body = line[len("data:"):].strip()
        if body == "[DONE]":
            return
        event = json.loads(body)
        if "error" in event:
            raise RuntimeError(str(event["error"]))
        yield event


async def send_sgl(session, args, req: BenchRequest) -> RequestResult:
    payload = {"input_ids": req.input_ids, "stream": True,
               "sampling_params": {"max_new_tokens": req.output_len, "temperature": 0.0,
                                   "ignore_eos": not args.disable_ignore_eos, **args.extra_sampling}}
    result, timer, text_len, out_len = RequestResult(len(req.input_ids)), StreamTimer(), 0, 0
    async with session.post(args.base_url + "/generate", json={**payload, **args.extra_body}) as response:
        if response.status != 200:
            return _failed(result, f"HTTP {response.status}: {await response.text()}")
        async for event in sse_events(response):
            out_len = event.get("meta_info", {}).get("completion_tokens", out_len)
            if len(event.get("text", "")) > text_len or "token_ids" in event:
                text_len = len(event.get("text", ""))
                timer.tick()
    return timer.finish(result, out_len)


async def send_oai(session, args, req: BenchRequest) -> RequestResult:
    payload = {"model": args.model, "prompt": req.input_ids, "max_tokens": req.output_len, "temperature": 0.0,
               "stream": True, "stream_options": {"include_usage": True},
               "ignore_eos": not args.disable_ignore_eos, **args.extra_sampling}
    result, timer, chunks, usage = RequestResult(len(req.input_ids)), StreamTimer(), 0, None
    async with session.post(args.base_url + "/v1/completions", json={**payload, **args.extra_body}) as response:
        if response.status != 200:
            return _failed(result, f"HTTP {response.status}: {await response.text()}")
        async for event in sse_events(response):
            usage = event.get("usage") or usage
            if any(choice.get("text") for choice in event.get("choices", [])):
                chunks += 1
                timer.tick()
    # Servers that ignore include_usage: one chunk per token is the best estimate.
    return timer.finish(result, usage["completion_tokens"] if usage else chunks)


def _failed(result: RequestResult, error: str) -> RequestResult:
    result.error = error
    return result


BACKENDS = {"sgl": send_sgl, "sgl-oai": send_oai}


# ---- the load -----------------------------------------------------------------------------------------
async def arrivals(reqs: List[BenchRequest], rate: float, seed: int) -> AsyncIterator[BenchRequest]:
    """Yield requests with exponential gaps (a Poisson process of `rate` per second)."""
    rng = random.Random(seed)
    for req in reqs:
        yield req
        if rate != float("inf"):
            await asyncio.sleep(rng.expovariate(rate))


async def run_load(args, reqs: List[BenchRequest]) -> tuple:
    import aiohttp

    send = BACKENDS[args.backend]
    limit = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
    timeout = aiohttp.ClientTimeout(total=6 * 3600)
    connector = aiohttp.TCPConnector(limit=0)  # the load shape comes from the arrivals, not the pool
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=args.headers) as session:
        async def one(req: BenchRequest) -> RequestResult:
            if limit is None:
                return await _guarded(send, session, args, req)
            async with limit:
                return await _guarded(send, session, args, req)

        first = await _guarded(send, session, args, reqs[0])  # a single test request, as SGLang does
        if not first.success:
            raise SystemExit(f"The initial test request failed: {first.error}")
        start = time.perf_counter()
        tasks = [asyncio.create_task(one(req)) async for req in arrivals(reqs, args.request_rate, args.seed)]
        results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - start


async def _guarded(send, session, args, req: BenchRequest) -> RequestResult:
    try:
        return await send(session, args, req)
    except Exception as e:  # a failed request is a result to report, not a crash
        return _failed(RequestResult(len(req.input_ids)), f"{type(e).__name__}: {e}")


# ---- report -------------------------------------------------------------------------------------------
def summarize(results: List[RequestResult], duration: float) -> Dict[str, Any]:
    ok = [r for r in results if r.success]
    out: Dict[str, Any] = {
        "completed": len(ok), "failed": len(results) - len(ok), "duration": duration,
        "total_input_tokens": sum(r.prompt_len for r in ok), "total_output_tokens": sum(r.output_len for r in ok),
    }
    out["request_throughput"] = len(ok) / duration
    out["input_throughput"] = out["total_input_tokens"] / duration
    out["output_throughput"] = out["total_output_tokens"] / duration
    out["total_throughput"] = out["input_throughput"] + out["output_throughput"]
    out["concurrency"] = sum(r.latency for r in ok) / duration
    tpot = [(r.latency - r.ttft) / (r.output_len - 1) for r in ok if r.output_len > 1]
    series = {"ttft": [r.ttft for r in ok], "tpot": tpot, "itl": [g for r in ok for g in r.itl],
              "e2e_latency": [r.latency for r in ok]}
    for name, values in series.items():
        out.update(_stats(name, [v * 1000 for v in values]))
    return out


def _stats(name: str, ms: List[float]) -> Dict[str, float]:
    if not ms:
        return {f"{k}_{name}_ms": 0.0 for k in ("mean", "median", "std", "p99")}
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {f"mean_{name}_ms": statistics.fmean(ms), f"median_{name}_ms": statistics.median(ms),
            f"std_{name}_ms": statistics.pstdev(ms), f"p99_{name}_ms": p99}


def report(args, summary: Dict[str, Any]) -> str:
    rows = [("Backend", args.backend), ("Traffic request rate", args.request_rate),
            ("Max request concurrency", args.max_concurrency or "not set"),
            ("Successful requests", summary["completed"]), ("Failed requests", summary["failed"]),
            ("Benchmark duration (s)", summary["duration"]), ("Total input tokens", summary["total_input_tokens"]),
            ("Total generated tokens", summary["total_output_tokens"]),
            ("Request throughput (req/s)", summary["request_throughput"]),
            ("Input token throughput (tok/s)", summary["input_throughput"]),
            ("Output token throughput (tok/s)", summary["output_throughput"]),
            ("Total token throughput (tok/s)", summary["total_throughput"]), ("Concurrency", summary["concurrency"])]
    lines = ["{s:{c}^50}".format(s=" Serving Benchmark Result ", c="=")] + [_row(k, v) for k, v in rows]
    for name, title in (("e2e_latency", "End-to-End Latency"), ("ttft", "Time to First Token"),
                        ("tpot", "Time per Output Token (excl. 1st token)"), ("itl", "Inter-token Latency")):
        lines.append("{s:{c}^50}".format(s=title, c="-"))
        for stat in ("mean", "median", "p99"):
            label = {"e2e_latency": "E2E Latency"}.get(name, name.upper())
            lines.append(_row(f"{stat.capitalize()} {label} (ms)", summary[f"{stat}_{name}_ms"]))
    lines.append("=" * 50)
    return "\n".join(lines)


def _row(key: str, value: Any) -> str:
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{key + ':':<40} {text:<10}"


# ---- CLI ----------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sgl.bench_serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="sgl")
    parser.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:30000 (overrides --host/--port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model", default=None, help="model name for sgl-oai (default: the server's first model)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--vocab-size", type=int, default=None, help="random ids are drawn below this")
    parser.add_argument("--request-rate", type=float, default=float("inf"))
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--disable-ignore-eos", action="store_true")
    parser.add_argument("--extra-request-body", default="{}", help="JSON merged into every request body")
    parser.add_argument("--output-file", default=None, help="append the results as a JSON line")
    add_dataset_args(parser)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.request_rate <= 0:
        parser.error("--request-rate must be positive (inf sends everything at once)")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        parser.error("--max-concurrency must be at least 1")
    if args.num_prompts < 1:
        parser.error("--num-prompts must be at least 1")
    try:
        args.extra_body = json.loads(args.extra_request_body)
    except json.JSONDecodeError as e:
        parser.error(f"--extra-request-body is not valid JSON: {e}")
    if not isinstance(args.extra_body, dict):
        parser.error("--extra-request-body must be a JSON object")
    args.extra_sampling = {}
    args.base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    args.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}


def discover(args: argparse.Namespace) -> None:
    """Fill in the model name and vocab size from the server when not given."""

    if args.vocab_size is None:
        args.vocab_size = _get(args, "/get_server_info").get("vocab_size") or DEFAULT_VOCAB
    if args.model is None:
        models = _get(args, "/v1/models").get("data") or [{}]
        args.model = models[0].get("id") or "default"


def _get(args: argparse.Namespace, path: str) -> Dict[str, Any]:
    import requests

    try:
        response = requests.get(args.base_url + path, headers=args.headers, timeout=30)
        return response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    discover(args)
    reqs = make_requests(args, args.vocab_size)
    results, duration = asyncio.run(run_load(args, reqs))
    summary = summarize(results, duration)
    print(report(args, summary))
    failures = [r.error for r in results if not r.success]
    if failures:
        print(f"{len(failures)} requests failed; first error: {failures[0]}")
    if args.output_file:
        record = {"backend": args.backend, "dataset_name": args.dataset_name, "request_rate": args.request_rate,
                  "max_concurrency": args.max_concurrency, "num_prompts": len(reqs), **summary}
        with open(args.output_file, "a") as f:
            f.write(json.dumps(record) + "\n")
    return summary
