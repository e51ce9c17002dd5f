"""Launch `python -m sgl.launch_server` as a subprocess for tests, and always clean it up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

import requests

API_KEY = "sgl-test-key"
# The flags of the session-wide test server (tests/server/conftest.py).
SERVER_ARGS = ["--max-total-tokens", "8192", "--enable-metrics", "--enable-cache-report",
               "--random-seed", "1"]

READY_LINE = "The server is fired up and ready to roll!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: List[str], api_key: Optional[str] = None, timeout: float = 240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log = tempfile.NamedTemporaryFile(prefix="sgl-server-test-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "sgl.launch_server", "--port", str(self.port), *args]
        if api_key:
            cmd += ["--api-key", api_key]
        # Same process group as the tests: killing the test run's group takes the server down too.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if READY_LINE in self.log_text():
                return
            time.sleep(0.5)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def children(self) -> List[int]:
        """Pids whose parent is the server process (its scheduler and detokenizer)."""
        return children_of(self.proc.pid)

    def child_pid(self, kind: str) -> int:
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[-2:-1] == [kind.encode()]:
                        return pid
            except OSError:
                continue
        raise LookupError(f"no {kind} child of server {self.proc.pid}")

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers, timeout=kw.pop("timeout", 120), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers, timeout=kw.pop("timeout", 300), **kw)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Best-effort cleanup: SIGTERM, then SIGKILL the server's children and the server."""
        children = self.children()
        try:
            self.terminate(20)
        except subprocess.TimeoutExpired:
            pass
        for pid in [p for p in children if _is_runtime_child(p)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


def pid_alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(parent: int) -> List[int]:
    """Pids whose parent is `parent`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _is_runtime_child(pid: int) -> bool:
    """Still one of our runtime processes (not a recycled pid)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sgl.runtime.entry.child" in f.read()
    except OSError:
        return False
