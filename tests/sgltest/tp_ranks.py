"""Run a function on N tensor-parallel ranks: one subprocess each, joined in a gloo group on a
local port, as the runtime's scheduler processes are. `run_on_ranks` returns rank 0's result.

A rank's command line is `python -m sgltest.tp_ranks RANK SIZE PORT module:function`; the
function's arguments arrive pickled on stdin, and rank 0 sends its pickled result on stdout.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from typing import Any

from sgltest.server_process import free_port

# tokens each greedy request of the default-model tests decodes
NEW_TOKENS = 12
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_ranks(tp_size: int, func: str, *args: Any, timeout: float = 300) -> Any:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
           "SGL_CPU_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    procs = []
    for rank in range(tp_size):
        cmd = [sys.executable, "-m", "sgltest.tp_ranks", str(rank), str(tp_size), str(port), func]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        proc.stdin.write(pickle.dumps(args))
        proc.stdin.close()
        procs.append(proc)
    try:
        result = procs[0].stdout.read()
        codes = [proc.wait(timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert codes == [0] * tp_size, f"ranks exited with {codes}"
    return pickle.loads(result)


def assert_same_greedy(got: dict, expected: dict) -> None:
    """{i: (token ids, logprobs)}: the ids equal, the logprobs within float32 reduction-order noise."""
    import torch

    for i, (ids, logprobs) in expected.items():
        assert got[i][0] == ids, f"prompt {i}: {got[i][0]} != {ids}"
        torch.testing.assert_close(torch.tensor(got[i][1]), torch.tensor(logprobs), rtol=1e-3, atol=1e-3)


def main() -> None:
    rank, size, port, func = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    args = pickle.load(sys.stdin.buffer)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from sgl.runtime.distributed.parallel_state import init_tensor_parallel

    init_tensor_parallel(rank, size, f"tcp://127.0.0.1:{port}", "cpu")
    module, name = func.split(":")
    result = getattr(importlib.import_module(module), name)(*args)
    if rank == 0:
        pickle.dump(result, out)
    out.close()
    from sgl.runtime.entry.process_utils import exit_now

    exit_now(0)  # as the runtime's ranks do: no process-group teardown racing the others' exits


if __name__ == "__main__":
    main()


# ---- workloads run on every rank (module:function names for run_on_ranks) -----------------------
def greedy_workload(model_dirs, tp_size: int, flag_sets, prompts, new_tokens: int) -> dict:
    """For each model and each set of ServerArgs flags: rank 0 runs `prompts` greedily through a
    Scheduler, then a request over the first prompt's cached prefix; the other ranks follow its
    plans. Rank 0 returns {(flag set index, model dir): {rid: {"ids", "logprobs", ...}}}; the
    others None. tp_size 1 runs in-process."""
    from sgl.runtime.distributed.parallel_state import get_tp_group
    from sgl.runtime.distributed.plan_channel import PlanReceiver, follow
    from sgl.runtime.executor.model_runner import ModelRunner
    from sgl.runtime.scheduler.scheduler import Scheduler
    from sgl.runtime.server_args import ServerArgs

    group = get_tp_group()
    results = {}
    for key in [(i, d) for i in range(len(flag_sets)) for d in model_dirs]:
        flags, model_dir = flag_sets[key[0]], key[1]
        sa = ServerArgs(model_path=model_dir, tp_size=tp_size, device="cpu", dtype="float32",
                        attention_backend="torch_native", max_total_tokens=1024, log_level="error",
                        random_seed=0, skip_tokenizer_init=True, **flags)
        runner = ModelRunner(sa)
        if group.rank > 0:
            follow(runner, PlanReceiver(group, "cpu"))
            continue
        sched = Scheduler(sa, model_runner=runner)
        results[key] = greedy_requests(sched, prompts, new_tokens) if sched.is_generation else \
            embedding_requests(sched, prompts)
        if runner.plan_sender is not None:
            runner.plan_sender.stop()
    return results if group.rank == 0 else None


def greedy_requests(sched, prompts, new_tokens: int, cached: bool = True) -> dict:
    """Greedy results of `prompts` (rids r0, r1, ...), then with `cached` of a request over the
    first prompt's cached prefix (rid "cached")."""
    from sgltest.runtime_helpers import submit

    greedy = dict(max_new_tokens=new_tokens, temperature=0, ignore_eos=True, return_logprob=True)
    for i, ids in enumerate(prompts):
        submit(sched, None, f"r{i}", ids, **greedy)
    results = _drain(sched)
    if cached:
        submit(sched, None, "cached", prompts[0] + [6, 7], **greedy)  # an extend over a radix-cache prefix
        results.update(_drain(sched))
        assert results["cached"]["cached_tokens"] > 0
    return results


def embedding_requests(sched, prompts) -> dict:
    """{rid: {"embedding"}} of a pooling model (or a causal LM under --is-embedding)."""
    from sgl.runtime.ipc.messages import TokenizedEmbeddingReqInput

    for i, ids in enumerate(prompts):
        sched.handle(TokenizedEmbeddingReqInput(f"e{i}", None, ids))
    return {rid: {"embedding": r["embedding"]} for rid, r in _drain(sched).items()}


def _drain(sched) -> dict:
    """{rid: {"ids", "logprobs", "cached_tokens"}}, stepping until idle (KV integrity after every step)."""
    results: dict = {}
    while sched.has_work():
        for out in sched.step():
            r = results.setdefault(out.rid, {"ids": [], "logprobs": []})
            r["ids"] += out.new_output_ids
            r["logprobs"] += [lp for lp, _ in out.output_token_logprobs or []]
            r["cached_tokens"] = out.cached_tokens
            if out.embedding is not None:
                r["embedding"] = out.embedding
        sched.check_integrity()
    return results
