"""`python -m sgl.bench_router`: the workers' prefix-cache hit rate behind the router, per policy.

Starts `--num-workers` servers (`python -m sgl.launch_server` on the default model, CPU unless
told otherwise through `--worker-args`) and, for each policy in turn, a fresh `python -m sgl.router`
in front of them. Each policy gets the same shared-prefix workload: `--num-groups` groups of
`--prompts-per-group` prompts, every prompt of a group a long system prefix (about
`--system-prefix-len` tokens, different per group) and a short question, sent in a shuffled order
with `--concurrency` requests in flight, `max_new_tokens` `--max-new-tokens`. Between policies the
workers' caches are flushed. The measure is the workers' own: the sum of `cached_tokens` over the
sum of `prompt_tokens` from each reply's meta_info (the router's estimate is printed beside it).

`--kill-worker` then runs the first policy once more and SIGKILLs one worker's process tree in the
middle: only the requests that worker had in flight may fail, with the router's 502 naming it.

Example (a 2-core CPU machine):
  python -m sgl.bench_router --num-workers 2 --num-groups 8 --prompts-per-group 4 --kill-worker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

import aiohttp

from sgl.utils import find_free_port, kill_process_tree

# Common words: about one token each in any BPE vocabulary, so a prefix of n words is ~n tokens.
_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case "
          "point government company number group problem fact water room mother area money story month "
          "night lot right study book job word business issue side kind head house service friend father "
          "power hour game line end member law car city community name team minute idea kid body back").split()


@dataclass
class PhaseResult:
    policy: str
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    router_hit_rate: float = 0.0
    seconds: float = 0.0
    errors: List[str] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def make_workload(groups: int, per_group: int, prefix_len: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    prompts = []
    for g in range(groups):
        prefix = f"System {g}: " + " ".join(rng.choice(_WORDS) for _ in range(prefix_len))
        prompts += [f"{prefix}\nQuestion {q}: what is {rng.choice(_WORDS)}?" for q in range(per_group)]
    rng.shuffle(prompts)
    return prompts


class Process:
    """A child process whose whole tree is killed on stop (it starts its own session)."""

    def __init__(self, cmd: List[str], log_path: str) -> None:
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        kill_process_tree(self.proc.pid, grace_s=5.0, process=self.proc)
        self.log.close()

    def crash(self) -> None:
        """SIGKILL the whole process group at once (a machine lost, not a shutdown), then reap."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.stop()


async def wait_healthy(url: str, proc: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{url} exited with {proc.proc.returncode}; see {proc.log.name}")
            try:
                async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} not healthy within {timeout} s; see {proc.log.name}")


async def send_all(router_url: str, prompts: List[str], args, result: PhaseResult,
                   on_progress=None) -> None:
    sem = asyncio.Semaphore(args.concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one(i: int, text: str) -> None:
            async with sem:
                body = {"text": text, "sampling_params": {"max_new_tokens": args.max_new_tokens, "temperature": 0}}
                async with session.post(router_url + "/generate", json=body) as resp:
                    reply = await resp.json(content_type=None)
                if resp.status == 200:
                    meta = reply["meta_info"]
                    result.ok += 1
                    result.prompt_tokens += meta["prompt_tokens"]
                    result.cached_tokens += meta.get("cached_tokens", 0)
                else:
                    result.failed += 1
                    result.errors.append(f"HTTP {resp.status}: {reply.get('error', reply)}")
                if on_progress is not None:
                    await on_progress(result)

        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))


async def run_phase(policy: str, worker_urls: List[str], prompts: List[str], args, log_dir: str,
                    kill: Optional[Process] = None) -> PhaseResult:
    port = find_free_port(start=args.base_port + 500)
    router_url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sgl.router", "--worker-urls", *worker_urls, "--port", str(port),
           "--policy", policy, "--health-check-interval-secs", "1", "--log-level", "warning"]
    router = Process(cmd, os.path.join(log_dir, f"router-{policy}.log"))
    result = PhaseResult(policy)
    try:
        await wait_healthy(router_url, router, 120)
        async with aiohttp.ClientSession() as session:
            async with session.post(router_url + "/flush_cache") as resp:
                resp.raise_for_status()
        killed = False

        async def maybe_kill(res: PhaseResult) -> None:
            nonlocal killed
            if kill is not None and not killed and res.ok + res.failed >= len(prompts) // 2:
                killed = True
                print(f"  killing worker pid {kill.proc.pid} after {res.ok + res.failed} replies", flush=True)
                await asyncio.to_thread(kill.crash)

        start = time.perf_counter()
        await send_all(router_url, prompts, args, result, maybe_kill)
        result.seconds = time.perf_counter() - start
        async with aiohttp.ClientSession() as session:
            async with session.get(router_url + "/get_router_stats") as resp:
                result.router_hit_rate = (await resp.json())["cache_hit_rate"]
    finally:
        router.stop()
    return result


def start_workers(args, log_dir: str) -> List[tuple]:
    workers = []
    for i in range(args.num_workers):
        port = find_free_port(start=args.base_port + 10 * i)
        cmd = [sys.executable, "-m", "sgl.launch_server", "--port", str(port),
               "--max-total-tokens", str(args.max_total_tokens), *args.worker_args.split()]
        workers.append((f"http://127.0.0.1:{port}", Process(cmd, os.path.join(log_dir, f"worker-{i}.log"))))
    return workers


async def bench(args) -> List[PhaseResult]:
    import tempfile

    log_dir = tempfile.mkdtemp(prefix="sgl-bench-router-")
    print(f"logs in {log_dir}", flush=True)
    prompts = make_workload(args.num_groups, args.prompts_per_group, args.system_prefix_len, args.seed)
    workers = start_workers(args, log_dir)
    results = []
    try:
        await asyncio.gather(*(wait_healthy(url, proc, args.worker_startup_timeout) for url, proc in workers))
        urls = [url for url, _ in workers]
        for policy in args.policies:
            print(f"policy {policy}: {len(prompts)} requests over {len(urls)} workers", flush=True)
            results.append(await run_phase(policy, urls, prompts, args, log_dir))
        if args.kill_worker:
            print(f"policy {args.policies[0]} with a worker killed mid-run", flush=True)
            result = await run_phase(args.policies[0], urls, prompts, args, log_dir, kill=workers[-1][1])
            result.policy += " (kill)"
            results.append(result)
    finally:
        for _, proc in workers:
            proc.stop()
    return results


def print_table(results: List[PhaseResult]) -> None:
    print(f"{'policy':<22}{'ok':>5}{'failed':>8}{'prompt tok':>12}{'cached tok':>12}{'hit rate':>10}"
          f"{'router est.':>13}{'seconds':>9}")
    for r in results:
        print(f"{r.policy:<22}{r.ok:>5}{r.failed:>8}{r.prompt_tokens:>12}{r.cached_tokens:>12}"
              f"{r.hit_rate:>10.3f}{r.router_hit_rate:>13.3f}{r.seconds:>9.1f}")
    base = next((r for r in results if r.policy == "round_robin"), None)
    ca = next((r for r in results if r.policy == "cache_aware"), None)
    if base and ca and base.hit_rate:
        print(f"cache_aware / round_robin hit rate: {ca.hit_rate / base.hit_rate:.2f}x")
    for r in results:
        for err in r.errors[:5]:
            print(f"  {r.policy} error: {err}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sgl.bench_router", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--num-workers", type=int, default=2, help="servers behind the router")
    p.add_argument("--num-groups", type=int, default=8, help="groups of prompts sharing a system prefix")
    p.add_argument("--prompts-per-group", type=int, default=4, help="prompts in each group")
    p.add_argument("--system-prefix-len", type=int, default=256, help="words (about tokens) of each system prefix")
    p.add_argument("--max-new-tokens", type=int, default=4, help="tokens generated per request")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--policies", nargs="+", default=["cache_aware", "round_robin"], help="policies, in order")
    p.add_argument("--kill-worker", action="store_true",
                   help="run the first policy again and SIGKILL the last worker half-way")
    p.add_argument("--max-total-tokens", type=int, default=8192, help="each worker's KV pool")
    p.add_argument("--worker-args", default="", help="more flags for every worker (one string)")
    p.add_argument("--worker-startup-timeout", type=float, default=600, help="seconds to wait for the workers")
    p.add_argument("--base-port", type=int, default=31000, help="ports are searched from here")
    p.add_argument("--seed", type=int, default=0, help="workload seed")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    print_table(asyncio.run(bench(args)))
