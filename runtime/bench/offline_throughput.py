"""`python -m sgl.bench_offline_throughput`: throughput of a whole dataset sent at once to sgl.Engine.

Datasets are made locally: `random` (random token ids) and `generated-shared-prefix` (groups of
prompts sharing a long system prompt, for the radix cache). Every request ignores EOS, so the
output length is exact. Prints request and token throughput and the cache hit rate, and appends
a JSON line to `--result-filename`.

`--hf-baseline` then runs the same requests through HF transformers `generate` in this process,
after the engine has exited: batches of `--hf-batch-size` requests in dataset order, left-padded,
each batch generating its longest output (a plain generate loop pays for that padding; only the
requested output tokens are counted). It uses the engine's dtype (`--hf-dtype` names others, each
run in turn) and torch's default thread count.

Examples:
  python -m sgl.bench_offline_throughput --model-path llama-3.1-8b --load-format dummy \
      --dataset-name random --random-input-len 1024 --random-output-len 1024 --num-prompts 2000
  python -m sgl.bench_offline_throughput --num-prompts 64 --random-input-len 128 \
      --random-output-len 64 --random-range-ratio 1.0 --hf-baseline     # CPU, the embedded model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import List, Optional

from sgl.runtime.bench.datasets import BenchRequest, add_dataset_args, make_requests
from sgl.runtime.bench.one_batch import add_hf_dtype_arg, build_hf_model, hf_dtypes
from sgl.runtime.server_args import ServerArgs


@dataclasses.dataclass
class ThroughputResult:
    dataset: str
    num_prompts: int
    seconds: float
    request_throughput: float
    input_tok_s: float
    output_tok_s: float
    total_tok_s: float
    cache_hit_rate: float
    disable_radix_cache: bool
    backend: str = "sgl"


def run(engine, reqs: List[BenchRequest], dataset: str) -> ThroughputResult:
    params = [{"max_new_tokens": r.output_len, "temperature": 0, "ignore_eos": True} for r in reqs]
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=[r.input_ids for r in reqs], sampling_params=params)
    dt = time.perf_counter() - t0
    n_in = sum(o["meta_info"]["prompt_tokens"] for o in outs)
    n_out = sum(o["meta_info"]["completion_tokens"] for o in outs)
    cached = sum(o["meta_info"]["cached_tokens"] for o in outs)
    return ThroughputResult(dataset, len(reqs), dt, len(reqs) / dt, n_in / dt, n_out / dt, (n_in + n_out) / dt,
                            cached / max(n_in, 1), engine.server_args.disable_radix_cache)


def run_hf(model, reqs: List[BenchRequest], batch_size: int, device: str, dtype) -> ThroughputResult:
    """HF `generate` over ``reqs`` in batches, greedy, every output exactly its requested length."""
    import torch

    t0 = time.perf_counter()
    for start in range(0, len(reqs), batch_size):
        batch = reqs[start : start + batch_size]
        width = max(len(r.input_ids) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):  # left padding, as decoder-only generation needs
            ids[i, width - len(r.input_ids):] = torch.tensor(r.input_ids)
            mask[i, width - len(r.input_ids):] = 1
        n = max(r.output_len for r in batch)
        with torch.inference_mode():
            model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=0)
    dt = time.perf_counter() - t0
    n_in, n_out = sum(len(r.input_ids) for r in reqs), sum(r.output_len for r in reqs)
    return ThroughputResult("hf-baseline", len(reqs), dt, len(reqs) / dt, n_in / dt, n_out / dt, (n_in + n_out) / dt,
                            0.0, True, backend=f"hf-transformers {str(dtype).replace('torch.', '')} (batch {batch_size})")


def print_result(result: ThroughputResult) -> None:
    print(f"{result.backend}, dataset {result.dataset}: {result.num_prompts} prompts in {result.seconds:.2f} s")
    print(f"  request throughput  {result.request_throughput:10.2f} req/s")
    print(f"  input throughput    {result.input_tok_s:10.1f} tok/s")
    print(f"  output throughput   {result.output_tok_s:10.1f} tok/s")
    print(f"  total throughput    {result.total_tok_s:10.1f} tok/s")
    print(f"  cache hit rate      {100 * result.cache_hit_rate:10.1f} %")


def main(argv: Optional[List[str]] = None) -> ThroughputResult:
    from sgl.runtime.entry.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m sgl.bench_offline_throughput")
    ServerArgs.add_cli_args(parser)
    add_dataset_args(parser)
    parser.add_argument("--result-filename", default=None)
    parser.add_argument("--skip-warmup", action="store_true")
    parser.add_argument("--hf-baseline", action="store_true",
                        help="also run the requests through HF transformers generate (see the module doc)")
    parser.add_argument("--hf-batch-size", type=int, default=16, help="requests per HF generate call")
    add_hf_dtype_arg(parser)
    args = parser.parse_args(argv)
    if args.hf_batch_size < 1:
        parser.error("--hf-batch-size must be at least 1")
    args.skip_tokenizer_init = True
    server_args = ServerArgs.from_cli_args(args)
    with Engine(server_args=server_args) as engine:
        reqs = make_requests(args, engine.core.model_config.vocab_size)
        if not args.skip_warmup:
            run(engine, reqs[: min(8, len(reqs))], "warmup")
            engine.flush_cache()
        result = run(engine, reqs, args.dataset_name)
        model_config = engine.core.model_config
    results = [result]
    if args.hf_baseline:
        for dtype in hf_dtypes(args.hf_dtype, model_config.dtype):
            model = build_hf_model(model_config, server_args.device, dtype)
            results.append(run_hf(model, reqs, args.hf_batch_size, server_args.device, dtype))
            del model
    for r in results:
        print_result(r)
    for r in results[1:]:
        print(f"sgl / {r.backend} output throughput: {result.output_tok_s / r.output_tok_s:.2f}x")
    if args.result_filename:
        with open(args.result_filename, "a") as f:
            for r in results:
                f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    return result


if __name__ == "__main__":
    main()
