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
from sgl.runtime.server_args import PortArgs, ServerArgs, parse_host_port
from sgl.runtime.tokenizer.dispatcher import merge_states
from sgl.utils import python_module_command

STARTUP_TIMEOUT_S = 600
# after one rank's start-up error, how long to collect the other ranks' errors
FAILURE_GRACE_S = 2.0
# a replica's rank 0 leaves its loop within about a second of SIGTERM (its idle poll)
FIRST_EXIT_S = 3.0


class ChildProcess:
    """A runtime child process (`python -m sgl.runtime.entry.child KIND`); a scheduler of a
    tensor- or data-parallel server is named after its place ("scheduler (TP rank 1)",
    "scheduler (DP 1, TP rank 0)")."""

    def __init__(self, kind: str, server_args: ServerArgs, port_args: PortArgs, tp_rank: Optional[int] = None,
                 dp_rank: Optional[int] = None):
        place = ([f"DP {dp_rank}"] if dp_rank is not None else []) + ([f"TP rank {tp_rank}"] if tp_rank is not None else [])
        self.name = f"{kind} ({', '.join(place)})" if place else kind
        self.kind, self.tp_rank = kind, tp_rank
        #: a scheduler that receives requests (rank 0 of its replica): stopped first, it stops the others
        self.leads = kind == "scheduler" and not tp_rank
        args = [kind] + ([f"--tp-rank={tp_rank}"] if tp_rank is not None else []) \
            + ([f"--dp-rank={dp_rank}"] if dp_rank is not None else [])
        local_ranks = len(local_tp_ranks(server_args)) * server_args.dp_size if kind == "scheduler" else 1
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
    """This node's schedulers (every data-parallel replica's ranks on it) and, on node 0, the
    detokenizer, all ready; returns them, the ports and the replicas' merged start-up report
    (empty on the other nodes)."""
    sa = server_args
    port_args = PortArgs.init_new(sa.dp_size)
    schedulers = []
    for dp_rank in range(sa.dp_size):
        replica = port_args.for_replica(dp_rank, _rendezvous(sa, dp_rank))
        for rank in local_tp_ranks(sa):
            schedulers.append(ChildProcess("scheduler", sa, replica, rank if sa.tp_size > 1 else None,
                                           dp_rank if sa.dp_size > 1 else None))
    procs = list(schedulers)
    if sa.node_rank == 0:
        procs.append(ChildProcess("detokenizer", sa, port_args))
    try:
        info = _wait_ready(schedulers, procs)
    except BaseException:
        shutdown_processes(procs)
        raise
    return procs, port_args, info


def _rendezvous(server_args: ServerArgs, dp_rank: int) -> Optional[Tuple[str, int]]:
    """Where replica `dp_rank`'s TP ranks meet: --dist-init-addr (its port + dp_rank), else a
    free local port; None without tensor parallelism."""
    if server_args.tp_size == 1:
        return None
    if server_args.dist_init_addr is None:
        return "127.0.0.1", _ephemeral_port()
    host, port = parse_host_port(server_args.dist_init_addr)
    return host, port + dp_rank


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
            leaders = [reports[p] for p in schedulers if p.leads]
            return merge_states(leaders) if leaders else {}
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
    """The leading schedulers (rank 0 of each replica) first: under tensor parallelism each tells
    its other ranks to stop, on every node, before anything else is terminated."""
    leaders = [p for p in procs if p.leads]
    for proc in leaders:
        proc.terminate()
    for proc in leaders:
        proc.join(FIRST_EXIT_S)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout)
        proc.kill()
        proc.join(1)
