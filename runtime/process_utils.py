"""Process helpers: child-process setup, parent-death watch, and killing a process tree."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional


def configure_logging(level: str = "info", prefix: str = "") -> None:
    fmt = f"[%(asctime)s{(' ' + prefix) if prefix else ''}] %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, datefmt="%Y-%m-%d %H:%M:%S", force=True)


def configure_child_process(name: str, server_args) -> None:
    """Logging, and exit when the parent dies so no process is orphaned."""
    configure_logging(server_args.log_level, name)
    watch_parent()


def watch_parent(interval: float = 0.5) -> None:
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def kill_process_tree(pid: Optional[int] = None, include_self: bool = False, sig: int = signal.SIGKILL) -> None:
    """Kill every descendant of `pid` (default: this process), children first."""
    pid = os.getpid() if pid is None else pid
    for child in _descendants(pid):
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass
    if include_self:
        os.kill(pid, sig)


def _descendants(pid: int) -> list:
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out[::-1]
