"""Process helpers: child-process setup and the parent-death watch (killing a process tree is
`sgl.utils.kill_process_tree`, shared with the frontend)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time


def configure_logging(level: str = "info", prefix: str = "") -> None:
    fmt = f"[%(asctime)s{(' ' + prefix) if prefix else ''}] %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, datefmt="%Y-%m-%d %H:%M:%S", force=True)


def configure_child_process(name: str, server_args) -> None:
    """Logging, and exit when the parent dies so no process is orphaned."""
    configure_logging(server_args.log_level, name)
    watch_parent()


def exit_now(code: int) -> None:
    """Flush the logs and end the process at once, skipping interpreter teardown (a step that may
    never return; torch.distributed's process groups, whose teardown can abort the process while
    the other ranks close their connections)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def watch_parent(interval: float = 0.5) -> None:
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()
