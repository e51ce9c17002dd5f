"""`python -m sgl.launch_server --nnodes N --node-rank K` with K > 0: run this node's TP ranks only.

Node 0 serves HTTP, tokenizes, detokenizes and runs rank 0, which schedules every batch; a worker
node starts its tp_size / nnodes scheduler processes, which join the group at --dist-init-addr
and run rank 0's plans. It exits 0 when rank 0 stops them (node 0 shut down cleanly), and 1, with
a line naming the rank, when one of its ranks fails (the group broke: a rank on any node died).
SIGINT/SIGTERM stop this node's ranks, which breaks the group: node 0's server exits too.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import List

from sgl.runtime.server_args import ServerArgs

logger = logging.getLogger("sgl.server")

WATCH_INTERVAL_S = 0.5


def run_worker_node(server_args: ServerArgs) -> int:
    from sgl.runtime.distributed.partition import check_tensor_parallel
    from sgl.runtime.entry.launcher import launch_subprocesses, shutdown_processes
    from sgl.runtime.entry.process_utils import configure_logging
    from sgl.runtime.models.model_config import ModelConfig

    configure_logging(server_args.log_level)
    stop: List[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    procs = []
    try:
        check_tensor_parallel(ModelConfig.from_server_args(server_args).hf_config, server_args.tp_size)
        procs, _, _ = launch_subprocesses(server_args)
        logger.info("Node %d of %d: TP ranks %s ready", server_args.node_rank, server_args.nnodes,
                    [p.tp_rank for p in procs])
        return _watch(procs, stop)
    except (ValueError, RuntimeError, TimeoutError, OSError) as e:
        logger.error("Node %d failed: %s", server_args.node_rank, e)
        return 1
    finally:
        shutdown_processes(procs)


def _watch(procs, stop: List[int]) -> int:
    while not stop:
        time.sleep(WATCH_INTERVAL_S)
        failed = [p for p in procs if not p.is_alive() and p.exitcode != 0]
        if failed:
            for proc in failed:
                logger.error("The %s process died (exit code %s); stopping this node.", proc.name, proc.exitcode)
            return 1
        if all(not p.is_alive() for p in procs):
            logger.info("Rank 0 stopped this node's ranks; exiting.")
            return 0
    logger.info("Received signal %d; stopping this node's ranks.", stop[0])
    return 0
