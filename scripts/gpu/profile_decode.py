"""Where a decode step's time goes at the T2 shape (issue 12): the scheduler in process, `--batch`
requests of `--input-len` random tokens prefilled in chunks, then `--steps` decode steps timed (wall
per step and device busy time), then a few under torch.profiler: the CUDA kernels by total time.

Usage (GPU machine): python3 scripts/gpu/profile_decode.py --model-path llama-3.1-8b --load-format dummy \
    --batch 205 --input-len 1536 [other ServerArgs flags]
"""

import argparse
import statistics
import time

import torch

from sgl.runtime.bench.datasets import random_requests
from sgl.runtime.ipc.messages import TokenizedGenerateReqInput
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.scheduler.scheduler import Scheduler
from sgl.runtime.server_args import ServerArgs


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    ServerArgs.add_cli_args(p)
    p.add_argument("--batch", type=int, default=205)
    p.add_argument("--input-len", type=int, default=1536)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--profile-steps", type=int, default=6)
    a = p.parse_args()
    sched = Scheduler(ServerArgs.from_cli_args(a), tokenizer=None)
    vocab = sched.model_config.vocab_size
    total = a.steps + a.profile_steps + 64
    for i, req in enumerate(random_requests(a.batch, a.input_len, total, 1.0, vocab, seed=1)):
        sp = SamplingParams(max_new_tokens=total, temperature=0, ignore_eos=True)
        sp.normalize(None)
        sched.handle(TokenizedGenerateReqInput(f"r{i}", None, req.input_ids, sp))
    t0 = time.perf_counter()
    while sched.waiting or sched.chunked_req is not None or len(sched.running) < a.batch:
        sched.step()
    for _ in range(8):
        sched.step()
    _sync()
    print(f"prefill of {a.batch} x {a.input_len} and 8 steps: {time.perf_counter() - t0:.2f} s; "
          f"running {len(sched.running)}; pool free {sched.token_to_kv_pool.available_size()}", flush=True)
    sched.model_runner.busy_timer.drain()
    walls = []
    for _ in range(a.steps):
        t = time.perf_counter()
        sched.step()
        walls.append(time.perf_counter() - t)
    _sync()
    busy = sched.model_runner.busy_timer.drain()
    med = statistics.median(walls) * 1e3
    print(f"batch {a.batch}, context ~{a.input_len + 8}: median step {med:.2f} ms "
          f"({a.batch / med * 1e3:.0f} tok/s), median device busy {statistics.median(busy):.2f} ms", flush=True)
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(a.profile_steps):
            sched.step()
        _sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if torch.cuda.is_available() else "cpu_time_total", row_limit=18, max_name_column_width=70), flush=True)


if __name__ == "__main__":
    main()
