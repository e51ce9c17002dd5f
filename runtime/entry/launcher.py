"""Start the scheduler and detokenizer processes and wait until the scheduler is ready."""

from __future__ import annotations

import pickle
import select
import subprocess
import time
from typing import List, Optional, Tuple

from sgl.runtime.executor.cpu_threads import child_env
from sgl.runtime.server_args import PortArgs, ServerArgs
from sgl.utils import python_module_command

STARTUP_TIMEOUT_S = 600


class ChildProcess:
    """A runtime child process (`python -m sgl.runtime.entry.child KIND`)."""

    def __init__(self, kind: str, server_args: ServerArgs, port_args: PortArgs):
        self.name = kind
        self.popen = subprocess.Popen(
            python_module_command("sgl.runtime.entry.child", kind),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(kind, server_args.device),
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


def launch_subprocesses(server_args: ServerArgs) -> Tuple[List[ChildProcess], PortArgs, dict]:
    port_args = PortArgs.init_new()
    scheduler = ChildProcess("scheduler", server_args, port_args)
    detokenizer = ChildProcess("detokenizer", server_args, port_args)
    procs = [scheduler, detokenizer]
    try:
        info = _wait_ready(scheduler, procs)
    except BaseException:
        shutdown_processes(procs)
        raise
    return procs, port_args, info


def _wait_ready(scheduler: ChildProcess, procs: List[ChildProcess]) -> dict:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        info = scheduler.read_report(0.2)
        if info is not None:
            if info.get("status") != "ready":
                raise ValueError(f"the scheduler failed to start: {info.get('message')}")
            return info
        for proc in procs:
            if not proc.is_alive():
                raise RuntimeError(f"the {proc.name} process exited during start-up (exit code {proc.exitcode})")
    raise TimeoutError(f"the scheduler did not become ready within {STARTUP_TIMEOUT_S} s")


def shutdown_processes(procs: List[ChildProcess], timeout: float = 5.0) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout)
        proc.kill()
        proc.join(1)
