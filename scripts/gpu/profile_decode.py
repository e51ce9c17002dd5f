"""Where a decode step's time goes at the T2 shape (issue 12): the scheduler in process, `--batch`
requests of `--input-len` random tokens prefilled in chunks, then `--steps` decode steps timed (wall
per step and device busy time), then a few under torch.profiler: the CUDA kernels by total time.

Usage (GPU machine): python3 scripts/gpu/profile_decode.py --model-path llama-3.1-8b --load-format dummy \
    --batch 205 --input-len 1536 [other ServerArgs flags]

Constrained requests (issue 13): `--json-schema FILE --constrained N` gives the first N requests that
schema (the scheduler then loads the model's tokenizer); `--host-profile` prints the host's time by
Python function (cProfile) over --steps more steps instead of the device profile. Runs on CPU as well.
"""

import argparse
import cProfile
import json
import pstats
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


PHASES = (("scheduler", "Scheduler._launch"), ("scheduler", "Scheduler._append_constrained"),
          ("scheduler", "Scheduler._sample_deferred"), ("scheduler", "Scheduler._process"),
          ("scheduler", "Scheduler._jump_forward"), ("grammar", "GrammarManager.apply_masks"),
          ("sampling", "SampleResult._resolve"), ("sampling", "BatchSampler.sample"))


def _time_phases(sched, steps: int) -> dict:
    """Wall time per step inside the scheduler's phases (nested ones are counted in their parents
    too): wrappers around the methods in PHASES for `steps` steps, then the originals back."""
    import importlib

    spent, undo = {}, []
    for module, qual in PHASES:
        owner = getattr(importlib.import_module(f"sgl.runtime.scheduler.{module}"), qual.split(".")[0])
        name = qual.split(".")[1]
        orig = getattr(owner, name)

        def timed(*args, _orig=orig, _key=name, **kwargs):
            t = time.perf_counter()
            try:
                return _orig(*args, **kwargs)
            finally:
                spent[_key] = spent.get(_key, 0.0) + time.perf_counter() - t

        setattr(owner, name, timed)
        undo.append((owner, name, orig))
    t0 = time.perf_counter()
    for _ in range(steps):
        sched.step()
    _sync()
    spent["step"] = time.perf_counter() - t0
    for owner, name, orig in undo:
        setattr(owner, name, orig)
    return {k: v * 1e3 / steps for k, v in spent.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    ServerArgs.add_cli_args(p)
    p.add_argument("--batch", type=int, default=205)
    p.add_argument("--input-len", type=int, default=1536)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--profile-steps", type=int, default=6)
    p.add_argument("--json-schema", default=None,
                   help="a JSON schema file for the constrained requests (default: bench_json --batch-mix's free string)")
    p.add_argument("--constrained", type=int, default=0, help="how many requests decode under --json-schema")
    p.add_argument("--host-profile", action="store_true", help="cProfile the timed steps (host time by function)")
    p.add_argument("--warm-steps", type=int, default=8, help="decode steps before the timed ones")
    a = p.parse_args()
    args = ServerArgs.from_cli_args(a)
    tokenizer = None
    schema = None
    if a.constrained:
        from sgl.runtime.models.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(args.tokenizer_path or args.model_path)
        if a.json_schema:
            with open(a.json_schema) as f:
                schema = f.read()
        else:
            from sgl.runtime.bench.json_decode import FREE_STRING_SCHEMA

            schema = json.dumps(FREE_STRING_SCHEMA)
    sched = Scheduler(args, tokenizer=tokenizer)
    vocab = sched.model_config.vocab_size
    total = a.warm_steps + 3 * a.steps + a.profile_steps + 64
    queued = lambda: sched.grammar is not None and bool(sched.grammar.queue)  # noqa: E731
    t0 = time.perf_counter()
    for i, req in enumerate(random_requests(a.batch, a.input_len, total, 1.0, vocab, seed=1)):
        sp = SamplingParams(max_new_tokens=total, temperature=0, ignore_eos=True,
                            json_schema=schema if i < a.constrained else None)
        sp.normalize(None)
        sched.handle(TokenizedGenerateReqInput(f"r{i}", None, req.input_ids, sp))
        if i + 1 == a.constrained:
            while queued():  # the schema compiles before the free requests start decoding
                time.sleep(0.01)
                sched.step()
    while sched.waiting or sched.chunked_req is not None or queued():
        sched.step()
    for _ in range(a.warm_steps):
        sched.step()
    _sync()
    print(f"prefill of {a.batch} x {a.input_len} and {a.warm_steps} steps: {time.perf_counter() - t0:.2f} s; "
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
    print(f"batch {a.batch}, context ~{a.input_len + a.warm_steps}: median step {med:.2f} ms "
          f"({a.batch / med * 1e3:.0f} tok/s), median device busy {statistics.median(busy):.2f} ms", flush=True)
    if a.host_profile:
        phases = _time_phases(sched, a.steps)
        print("host phases, ms per step: " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()), flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(a.steps):
            sched.step()
        _sync()
        prof.disable()
        live = sum(r.grammar is not None for r in sched.running)
        print(f"{live} of {len(sched.running)} running requests under a grammar; host time per step by function:")
        stats = pstats.Stats(prof)
        stats.total_tt /= a.steps
        stats.sort_stats("tottime").print_stats("sgl|runtime|lang", 30)
        stats.sort_stats("cumulative").print_stats("constrained|grammar|sampling|scheduler", 30)
        return
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(a.profile_steps):
            sched.step()
        _sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if torch.cuda.is_available() else "cpu_time_total", row_limit=18, max_name_column_width=70), flush=True)


if __name__ == "__main__":
    main()
