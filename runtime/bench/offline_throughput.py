"""`python -m sgl.bench_offline_throughput`: throughput of a whole dataset sent at once to sgl.Engine.

Datasets are made locally: `random` (random token ids) and `generated-shared-prefix` (groups of
prompts sharing a long system prompt, for the radix cache). Every request ignores EOS, so the
output length is exact. Prints request and token throughput and the cache hit rate, and appends
a JSON line to `--result-filename`.

Example:
  python -m sgl.bench_offline_throughput --model-path llama-3.1-8b --load-format dummy \
      --dataset-name random --random-input-len 1024 --random-output-len 1024 --num-prompts 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import List, Optional

from sgl.runtime.bench.datasets import BenchRequest, add_dataset_args, make_requests
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


def main(argv: Optional[List[str]] = None) -> ThroughputResult:
    from sgl.runtime.entry.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m sgl.bench_offline_throughput")
    ServerArgs.add_cli_args(parser)
    add_dataset_args(parser)
    parser.add_argument("--result-filename", default=None)
    parser.add_argument("--skip-warmup", action="store_true")
    args = parser.parse_args(argv)
    args.skip_tokenizer_init = True
    server_args = ServerArgs.from_cli_args(args)
    with Engine(server_args=server_args) as engine:
        reqs = make_requests(args, engine.core.model_config.vocab_size)
        if not args.skip_warmup:
            run(engine, reqs[: min(8, len(reqs))], "warmup")
            engine.flush_cache()
        result = run(engine, reqs, args.dataset_name)
    print(f"dataset {result.dataset}: {result.num_prompts} prompts in {result.seconds:.2f} s")
    print(f"  request throughput  {result.request_throughput:10.2f} req/s")
    print(f"  input throughput    {result.input_tok_s:10.1f} tok/s")
    print(f"  output throughput   {result.output_tok_s:10.1f} tok/s")
    print(f"  total throughput    {result.total_tok_s:10.1f} tok/s")
    print(f"  cache hit rate      {100 * result.cache_hit_rate:10.1f} %")
    if args.result_filename:
        with open(args.result_filename, "a") as f:
            f.write(json.dumps(dataclasses.asdict(result)) + "\n")
    return result


if __name__ == "__main__":
    main()
