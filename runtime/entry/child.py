"""Entry point of the runtime's child processes: `python -m sgl.runtime.entry.child scheduler|detokenizer`
(`scheduler --tp-rank=R --dp-rank=D`: rank R of data-parallel replica D of a parallel server).

Children are started with subprocess rather than multiprocessing: multiprocessing's spawn re-runs
the user's main script in every child, which breaks scripts without a `__main__` guard. The
arguments arrive pickled on stdin; the scheduler reports readiness as one pickled dict on stdout.
"""

from __future__ import annotations

import os
import pickle
import sys


def main() -> None:
    kind = sys.argv[1]
    options = dict(arg[2:].split("=", 1) for arg in sys.argv[2:])
    tp_rank, dp_rank = int(options.get("tp-rank", 0)), int(options.get("dp-rank", 0))
    server_args, port_args = pickle.load(sys.stdin.buffer)
    # stdout carries the readiness report; everything printed goes to stderr.
    report = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if kind == "scheduler":
        from sgl.runtime.scheduler.process import run_scheduler_process

        run_scheduler_process(server_args, port_args, _Reporter(report), tp_rank, dp_rank)
    elif kind == "detokenizer":
        from sgl.runtime.detokenizer.detokenizer import run_detokenizer_process

        run_detokenizer_process(server_args, port_args)
    else:
        raise SystemExit(f"unknown child kind {kind!r}")


class _Reporter:
    def __init__(self, stream):
        self.stream = stream

    def send(self, obj: dict) -> None:
        pickle.dump(obj, self.stream)
        self.stream.flush()


if __name__ == "__main__":
    main()
