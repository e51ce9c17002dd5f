"""The scheduler process of one tensor-parallel rank: join the TP group, build the model runner
(and on rank 0 the scheduler), report readiness, then serve.

Rank 0 serves ZeroMQ exactly as a single-rank scheduler does and sends every forward plan to
the other ranks (distributed/plan_channel.py); the other ranks only run those plans. Under
tensor parallelism rank 0 leaves its loop on SIGTERM between two steps and tells the other ranks
to stop, so each of them exits 0; a rank whose group breaks (another rank died) exits 1.
"""

from __future__ import annotations

import logging
import signal
import traceback

from sgl.runtime.entry.process_utils import configure_child_process, exit_now
from sgl.runtime.scheduler.watchdog import Watchdog

logger = logging.getLogger(__name__)


def run_scheduler_process(server_args, port_args, pipe_writer, tp_rank: int = 0, dp_rank: int = 0) -> None:
    place = ([f"DP{dp_rank}"] if server_args.dp_size > 1 else []) + ([f"TP{tp_rank}"] if server_args.tp_size > 1 else [])
    configure_child_process(" ".join(place) or "scheduler", server_args)
    try:
        _join_tp_group(server_args, port_args, tp_rank, dp_rank)
        built = _build(server_args) if tp_rank == 0 else _build_runner(server_args)
    except Exception as e:  # report the cause to the launcher instead of dying silently
        logger.error("Scheduler failed to start: %s\n%s", e, traceback.format_exc())
        pipe_writer.send({"status": "error", "message": f"{type(e).__name__}: {e}"})
        return
    if tp_rank == 0:
        _serve(built, server_args, port_args, pipe_writer)
    else:
        pipe_writer.send({"status": "ready", "tp_rank": tp_rank})
        _follow(built, tp_rank)


def _join_tp_group(server_args, port_args, tp_rank: int, dp_rank: int) -> None:
    """Join the replica's TP group; on CUDA select this rank's GPU: replica d's ranks on a node
    use GPUs d * ranks_per_node .. (d + 1) * ranks_per_node - 1 of it."""
    ranks_per_node = server_args.tp_size // server_args.nnodes
    gpu = dp_rank * ranks_per_node + tp_rank % ranks_per_node
    if server_args.tp_size == 1:
        if server_args.device == "cuda" and gpu:
            import torch

            torch.cuda.set_device(gpu)
        return
    from sgl.runtime.distributed.parallel_state import init_tensor_parallel

    init_tensor_parallel(tp_rank, server_args.tp_size, port_args.dist_init_method, server_args.device, gpu=gpu)


def _serve(scheduler, server_args, port_args, pipe_writer) -> None:
    import zmq

    ctx = zmq.Context(2)
    recv = ctx.socket(zmq.PULL)
    recv.bind(port_args.scheduler_input_ipc_name)
    send = ctx.socket(zmq.PUSH)
    send.connect(port_args.detokenizer_ipc_name)
    pipe_writer.send({"status": "ready", **scheduler.internal_state()})
    poller = zmq.Poller()
    poller.register(recv, zmq.POLLIN)
    watchdog = Watchdog(server_args.watchdog_timeout).start()
    sender = scheduler.model_runner.plan_sender
    receive = (lambda: _drain(recv)) if sender is None else _stoppable(lambda: _drain(recv))
    try:
        scheduler.event_loop(receive, send.send_pyobj, lambda: poller.poll(1000), watchdog)
    except SystemExit:
        if sender is None:
            raise
        sender.stop()  # between two steps: no rank is inside a collective
        exit_now(0)


def _stoppable(receive):
    """`receive` that raises SystemExit once SIGTERM has arrived (checked once per loop turn)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))

    def checked() -> list:
        if stop:
            logger.info("SIGTERM: stopping the tensor-parallel ranks")
            raise SystemExit(0)
        return receive()

    return checked


def _follow(model_runner, tp_rank: int) -> None:
    from sgl.runtime.distributed.parallel_state import get_tp_group
    from sgl.runtime.distributed.plan_channel import PlanReceiver, follow

    try:
        follow(model_runner, PlanReceiver(get_tp_group(), model_runner.device))
        code = 0
    except Exception as e:  # the group broke: another rank died or was killed
        logger.error("TP rank %d: the tensor-parallel group failed (another rank may have died): %s", tp_rank, e)
        code = 1
    exit_now(code)


def _build(server_args):
    from sgl.runtime.scheduler.scheduler import Scheduler

    tokenizer = None
    if not server_args.skip_tokenizer_init:
        from sgl.runtime.models.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(server_args.tokenizer_path, server_args.tokenizer_mode, server_args.trust_remote_code)
    return Scheduler(server_args, tokenizer=tokenizer)


def _build_runner(server_args):
    from sgl.runtime.executor.model_runner import ModelRunner

    return ModelRunner(server_args)


def _drain(sock) -> list:
    import zmq

    msgs = []
    while True:
        try:
            msgs.append(sock.recv_pyobj(zmq.NOBLOCK))
        except zmq.ZMQError:
            return msgs
