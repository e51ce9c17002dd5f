"""Build outlines-core token indexes in worker processes, each with a memory cap.

A JSON schema or regex of a few kilobytes can need gigabytes to become a token index (its
automaton's states times the vocabulary), and outlines-core aborts the whole process when an
allocation fails. Building the index in the scheduler would let one request kill the server, so
``IndexBuilder`` builds it in a small pool of worker processes instead: each runs this file as a
script (no torch, no sgl import: ~0.2 s to start), caps its address space with RLIMIT_AS, builds
the index and sends it back pickled. A worker that dies (allocation failure) or runs past the
time limit is killed and replaced; that request alone fails with a ValueError.

Protocol on the worker's stdin/stdout: pickled frames. First the parent sends
``(eos_token_id, {token bytes: [ids]})``; then each request is a regex string and each answer is
``("ok", Index)`` or ``("error", message)``.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import threading
from typing import Dict, List, Optional

__all__ = ["IndexBuilder", "IndexBuildLimit", "default_memory_limit"]


class IndexBuildLimit(ValueError):
    """The index needed more memory or time than a worker is given."""


def default_memory_limit(workers: int) -> int:
    """Bytes each worker may map: a quarter of the machine's memory shared among the workers,
    at most 6 GiB each and at least 1 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 16 << 30
    return max(1 << 30, min(6 << 30, total // 4 // max(workers, 1)))


class _Worker:
    def __init__(self, setup: bytes, memory_limit: int):
        env = dict(os.environ, SGL_INDEX_WORKER_MEMORY=str(memory_limit))
        self.proc = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self.proc.stdin.write(setup)
        self.proc.stdin.flush()

    def build(self, regex: str, timeout: Optional[float]):
        pickle.dump(regex, self.proc.stdin)
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        return pickle.load(self.proc.stdout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class IndexBuilder:
    """``build(regex)`` -> ``outlines_core.Index`` over a fixed vocabulary, built out of process.

    Thread-safe: up to ``workers`` builds run at once, the rest wait for a free worker.
    """

    def __init__(self, eos_token_id: int, mapping: Dict[bytes, List[int]], workers: int = 2,
                 memory_limit: Optional[int] = None, timeout: Optional[float] = None):
        self.memory_limit = memory_limit or default_memory_limit(workers)
        self.timeout = timeout
        self._setup = pickle.dumps((eos_token_id, mapping))
        self._idle: List[_Worker] = []
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._closed = False

    def build(self, regex: str):
        with self._slots:
            worker = self._take()
            try:
                status, payload = worker.build(regex, self.timeout)
            except TimeoutError:
                worker.kill()
                raise IndexBuildLimit(f"grammar compilation timed out after {self.timeout:g} s") from None
            except (EOFError, OSError, pickle.UnpicklingError):
                worker.kill()
                raise IndexBuildLimit(
                    f"grammar compilation needs more than {self.memory_limit / (1 << 30):.1f} GiB of memory "
                    "(the automaton is too large); simplify the regex or schema"
                ) from None
            self._give_back(worker)
        if status == "error":
            raise RuntimeError(payload)  # the caller turns outlines-core's message into a ValueError
        return payload

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ValueError("the grammar backend is shut down")
            while self._idle:
                worker = self._idle.pop()
                if worker.proc.poll() is None:
                    return worker
        return _Worker(self._setup, self.memory_limit)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


def _serve() -> None:
    import resource

    limit = int(os.environ.get("SGL_INDEX_WORKER_MEMORY", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import outlines_core

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    eos, mapping = pickle.load(stdin)
    vocab = outlines_core.Vocabulary(eos, mapping)
    while True:
        try:
            regex = pickle.load(stdin)
        except EOFError:
            return
        try:
            answer = ("ok", outlines_core.Index(regex, vocab))
        except MemoryError:
            return  # the parent reports the memory limit
        except Exception as e:
            answer = ("error", str(e))
        try:
            pickle.dump(answer, stdout)
            stdout.flush()
        except BrokenPipeError:
            return  # the parent is gone (server shut down while this index was being built)


if __name__ == "__main__":
    _serve()
