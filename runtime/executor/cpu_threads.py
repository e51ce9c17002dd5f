"""CPU threading of the runtime: how many threads torch gets, and the OpenMP settings of the children.

On CPU the scheduler process does all the compute, so it gets every core the process may run on
(``SGL_CPU_THREADS`` overrides). The tokenizer side and the detokenizer do little work, but they
share those cores: with OpenMP's default wait policy the scheduler's threads spin at every
barrier, and when one of them is descheduled for another process the others spin until it returns,
so a step can take ten times as long (measured on a 2-core machine: a 2-thread decode attention
op went from 0.3 ms to 5-24 ms while a second process kept one core busy). The scheduler process
therefore starts with ``OMP_WAIT_POLICY=PASSIVE`` (its threads sleep instead of spinning), and the
detokenizer with one thread. Both are defaults: values already in the environment win.

Under tensor parallelism a node runs one scheduler process per rank, and the ranks wait on each
other at every collective, so they split the cores: each gets ``SGL_CPU_THREADS`` = cores / ranks
(at least one) unless the variable is set.
"""

from __future__ import annotations

import os
from typing import Dict

THREADS_ENV = "SGL_CPU_THREADS"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads for torch's intra-op pool in a process that runs the model on CPU."""
    value = os.environ.get(THREADS_ENV)
    if value is None:
        return available_cores()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return threads


def child_env(kind: str, device: str, local_ranks: int = 1) -> Dict[str, str]:
    """The environment of the runtime child process ``kind`` ("scheduler" or "detokenizer");
    `local_ranks`: the scheduler processes (tensor-parallel ranks) on this machine."""
    env = dict(os.environ)
    if kind == "scheduler" and device == "cpu":
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if local_ranks > 1:
            env.setdefault(THREADS_ENV, str(max(1, available_cores() // local_ranks)))
    elif kind != "scheduler":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
