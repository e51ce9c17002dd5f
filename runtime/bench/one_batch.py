"""`python -m sgl.bench_one_batch`: latency of one static batch (prefill, then decode steps).

Runs the scheduler in-process (no HTTP, no child processes) over random token ids with
`ignore_eos`, so every request decodes exactly `--output-len` tokens. Prints the prefill latency
and the median decode-step latency for every (batch size, input len, output len) in the sweep,
optionally beside HF transformers `generate` on the same config in the same run
(`--hf-baseline`), and appends JSON lines to `--result-filename`. The whole batch is prefilled in
one forward (no chunking; `--max-prefill-tokens` is raised to batch size x input length, so the
memory profile at start-up leaves room for that forward's activations).

Example (GPU, no weights needed):
  python -m sgl.bench_one_batch --model-path llama-3.1-8b --load-format dummy \
      --batch-size 1 64 --input-len 128 --output-len 256 --hf-baseline
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import logging
import statistics
import time
from typing import List, Optional

import torch

from sgl.runtime.bench.datasets import random_requests
from sgl.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Result:
    backend: str
    batch_size: int
    input_len: int
    output_len: int
    prefill_ms: float
    median_decode_ms: float
    decode_tok_s: float
    median_busy_ms: float  # device busy time of a decode forward; the rest of a step is CPU overhead
    device: str


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _build_scheduler(server_args: ServerArgs):
    from sgl.runtime.scheduler.scheduler import Scheduler

    return Scheduler(server_args, tokenizer=None)


def run_sgl(sched, bs: int, input_len: int, output_len: int) -> Result:
    from sgl.runtime.ipc.messages import TokenizedGenerateReqInput
    from sgl.runtime.sampling.params import SamplingParams

    vocab = sched.model_config.vocab_size
    for i, req in enumerate(random_requests(bs, input_len, output_len, 1.0, vocab, seed=bs * 7 + input_len)):
        params = SamplingParams(max_new_tokens=output_len, temperature=0, ignore_eos=True)
        params.normalize(None)
        sched.handle(TokenizedGenerateReqInput(f"b{i}", None, req.input_ids, params))
    device = sched.device
    _sync(device)
    sched.model_runner.busy_timer.drain()
    times: List[float] = []
    t0 = time.perf_counter()
    sched.step()  # the prefill
    _sync(device)
    times.append(time.perf_counter() - t0)
    # Decode steps are not synchronized one by one (that would defeat the overlap scheduler): in
    # steady state each step waits for its batch's tokens, so the wall time between steps is the
    # decode step time.
    while sched.has_work():
        t0 = time.perf_counter()
        sched.step()
        times.append(time.perf_counter() - t0)
    _sync(device)
    sched.flush_cache()
    busy = sched.model_runner.busy_timer.drain()[1:]
    prefill, decode = times[0], times[1:]
    median = statistics.median(decode) if decode else float("nan")
    busy_ms = statistics.median(busy) if busy else float("nan")
    return Result("sgl", bs, input_len, output_len, prefill * 1e3, median * 1e3, bs / median if decode else 0.0,
                  busy_ms, device)


def run_hf(model_config, device: str, dtype: torch.dtype, bs: int, input_len: int, output_len: int, model=None):
    """HF transformers `generate` on the same architecture with random weights."""
    ids = torch.randint(100, model_config.vocab_size, (bs, input_len), device=device)
    mask = torch.ones_like(ids)

    def gen(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)
        _sync(device)
        return time.perf_counter() - t0

    gen(2)  # warm-up
    prefill = gen(1)
    total = gen(output_len)
    step = (total - prefill) / max(output_len - 1, 1)
    return Result(f"hf-{str(dtype).replace('torch.', '')}", bs, input_len, output_len, prefill * 1e3, step * 1e3, bs / step, float("nan"), device)


def build_hf_model(model_config, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config.hf_config, dtype=dtype)
    return model.eval()


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def add_hf_dtype_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-dtype", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype(s) of the HF baseline, each timed in turn; auto: the engine's. "
                             "Ratios compare with the first")


def hf_dtypes(names: List[str], engine_dtype: torch.dtype) -> List[torch.dtype]:
    """The --hf-dtype names as torch dtypes, in order, without repeats."""
    return list(dict.fromkeys(engine_dtype if name == "auto" else getattr(torch, name) for name in names))


def print_table(results: List[Result]) -> None:
    header = (f"{'backend':<16}{'bs':>5}{'in':>7}{'out':>6}{'prefill ms':>12}{'decode ms':>11}{'busy ms':>9}"
              f"{'tok/s':>11}{'vs hf':>8}")
    print(header)
    hf = {}
    for r in results:  # the first HF row of each shape
        if r.backend != "sgl":
            hf.setdefault((r.batch_size, r.input_len, r.output_len), r)
    for r in results:
        base = hf.get((r.batch_size, r.input_len, r.output_len))
        ratio = f"{base.median_decode_ms / r.median_decode_ms:.2f}x" if base and r.backend == "sgl" else ""
        print(f"{r.backend:<16}{r.batch_size:>5}{r.input_len:>7}{r.output_len:>6}{r.prefill_ms:>12.2f}"
              f"{r.median_decode_ms:>11.3f}{r.median_busy_ms:>9.3f}{r.decode_tok_s:>11.1f}{ratio:>8}")


def main(argv: Optional[List[str]] = None) -> List[Result]:
    parser = argparse.ArgumentParser(prog="python -m sgl.bench_one_batch")
    ServerArgs.add_cli_args(parser)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1])
    parser.add_argument("--input-len", type=int, nargs="+", default=[1024])
    parser.add_argument("--output-len", type=int, nargs="+", default=[16])
    parser.add_argument("--hf-baseline", action="store_true", help="also time HF transformers generate")
    add_hf_dtype_arg(parser)
    parser.add_argument("--result-filename", default=None, help="append one JSON line per result")
    parser.add_argument("--warmup-steps", type=int, default=4)
    args = parser.parse_args(argv)
    if args.chunked_prefill_size is None:
        args.chunked_prefill_size = -1  # one static batch: prefill it in one forward
    # ... which the prefill budget (and the memory profile sized from it) must cover
    args.max_prefill_tokens = max(args.max_prefill_tokens, max(args.batch_size) * max(args.input_len))
    args.skip_tokenizer_init = True
    server_args = ServerArgs.from_cli_args(args)
    logging.basicConfig(level=getattr(logging, server_args.log_level.upper(), logging.INFO))
    sched = _build_scheduler(server_args)
    sched_desc = f"{sched.model_runner.dtype}, {torch.get_num_threads()} threads"
    sweep = list(itertools.product(args.batch_size, args.input_len, args.output_len))
    run_sgl(sched, max(args.batch_size), min(args.input_len), args.warmup_steps)  # warm-up
    results = [run_sgl(sched, bs, il, ol) for bs, il, ol in sweep]
    if args.hf_baseline:
        cfg, device = sched.model_config, sched.device
        dtypes = hf_dtypes(args.hf_dtype, sched.model_runner.dtype)
        del sched  # free our weights and KV pool before HF allocates its own
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        hf_desc = f"{', '.join(str(d) for d in dtypes)}, {torch.get_num_threads()} threads"
        for dtype in dtypes:
            model = build_hf_model(cfg, device, dtype)
            results += [run_hf(cfg, device, dtype, bs, il, ol, model) for bs, il, ol in sweep]
            del model
    print(f"sgl: {sched_desc}" + (f"; HF transformers {transformers_version()}, {hf_desc}" if args.hf_baseline else ""))
    print_table(results)
    if args.result_filename:
        with open(args.result_filename, "a") as f:
            for r in results:
                f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    return results


if __name__ == "__main__":
    main()
