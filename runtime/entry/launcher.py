"""Start the scheduler and detokenizer processes and wait until the schedulers are ready.

Under tensor parallelism there is one scheduler process per TP rank of this node (node n of
`--nnodes` runs ranks n*tp/nnodes .. (n+1)*tp/nnodes - 1); the detokenizer runs on node 0 only,
beside rank 0, which is the scheduler the tokenizer manager talks to.
"""

from __future__ import annotations

import pickle
import select
import socket
import subprocess
import time
from typing import List, Optional, Tuple

from sgl.runtime.executor.cpu_threads import child_env
from sgl.runtime.server_args import PortArgs, ServerArgs
from sgl.utils import python_module_command

STARTUP_TIMEOUT_S = 600
# after one rank's start-up error, how long to collect the other ranks' errors
FAILURE_GRACE_S = 2.0
# rank 0 leaves its loop within about a second of SIGTERM (its idle poll)
FIRST_EXIT_S = 3.0


class ChildProcess:
    """A runtime child process (`python -m sgl.runtime.entry.child KIND`); a scheduler of a
    tensor-parallel server is named after its rank ("scheduler (TP rank 1)")."""

    def __init__(self, kind: str, server_args: ServerArgs, port_args: PortArgs, tp_rank: Optional[int] = None):
        self.name = kind if tp_rank is None else f"{kind} (TP rank {tp_rank})"
        self.tp_rank = tp_rank
        args = [kind] if tp_rank is None else [kind, f"--tp-rank={tp_rank}"]
        local_ranks = len(local_tp_ranks(server_args)) if kind == "scheduler" else 1
        self.popen = subprocess.Popen(
            python_module_command("sgl.runtime.entry.child", *args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(kind, server_args.device, local_ranks),
        )
        pickle.dump((server_args, port_args), self.popen.stdin)
        self.popen.stdin.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> Optional[int]:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def read_report(self, timeout: float) -> Optional[dict]:
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            return None
        try:
            return pickle.load(self.popen.stdout)
        except EOFError:
            return None

    def terminate(self) -> None:
        if self.is_alive():
            self.popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()

    def join(self, timeout: Optional[float] = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def local_tp_ranks(server_args: ServerArgs) -> range:
    """The TP ranks this node runs."""
    per_node = server_args.tp_size // server_args.nnodes
    return range(server_args.node_rank * per_node, (server_args.node_rank + 1) * per_node)


def launch_subprocesses(server_args: ServerArgs) -> Tuple[List[ChildProcess], PortArgs, dict]:
    """This node's schedulers (and on node 0 the detokenizer), ready; returns them, the ports and
    rank 0's report (empty on the other nodes)."""
    tp = server_args.tp_size > 1
    # the ranks of one machine meet on a free local port unless told where
    rendezvous = server_args.dist_init_addr or (f"127.0.0.1:{_ephemeral_port()}" if tp else None)
    port_args = PortArgs.init_new(rendezvous)
    schedulers = [ChildProcess("scheduler", server_args, port_args, rank if tp else None)
                  for rank in local_tp_ranks(server_args)]
    procs = list(schedulers)
    if server_args.node_rank == 0:
        procs.append(ChildProcess("detokenizer", server_args, port_args))
    try:
        info = _wait_ready(schedulers, procs)
    except BaseException:
        shutdown_processes(procs)
        raise
    return procs, port_args, info


def _ephemeral_port() -> int:
    """A port the OS considers free now (from the ephemeral range, away from HTTP ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(schedulers: List[ChildProcess], procs: List[ChildProcess]) -> dict:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    reports = {}
    while time.monotonic() < deadline:
        for proc in schedulers:
            if proc in reports:
                continue
            info = proc.read_report(0.2 / len(schedulers))
            if info is None:
                continue
            if info.get("status") != "ready":
                raise ValueError(_startup_failure(proc, info, schedulers))
            reports[proc] = info
        if len(reports) == len(schedulers):
            return reports[schedulers[0]] if schedulers[0].tp_rank in (None, 0) else {}
        for proc in procs:
            if not proc.is_alive() and proc not in reports:
                raise RuntimeError(f"the {proc.name} process exited during start-up (exit code {proc.exitcode})")
    raise TimeoutError(f"the schedulers did not become ready within {STARTUP_TIMEOUT_S} s")


def _startup_failure(first: ChildProcess, info: dict, schedulers: List[ChildProcess]) -> str:
    """Every scheduler's start-up error: when one rank fails, the others fail too (their group
    broke), and the root cause may be any of them."""
    messages = [f"the {first.name} failed to start: {info.get('message')}"]
    deadline = time.monotonic() + FAILURE_GRACE_S
    for proc in schedulers:
        if proc is first:
            continue
        other = proc.read_report(max(deadline - time.monotonic(), 0))
        if other is not None and other.get("status") != "ready":
            messages.append(f"the {proc.name} failed to start: {other.get('message')}")
    return "; ".join(messages)


def shutdown_processes(procs: List[ChildProcess], timeout: float = 5.0) -> None:
    """The first process (rank 0's scheduler) first: under tensor parallelism it tells the other
    ranks to stop, on every node, before anything else is terminated."""
    if procs:
        procs[0].terminate()
        procs[0].join(FIRST_EXIT_S)
    for proc in procs[1:]:
        proc.terminate()
    for proc in procs:
        proc.join(timeout)
        proc.kill()
        proc.join(1)
