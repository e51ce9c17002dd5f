"""The scheduler process: build the model runner and scheduler, report readiness, serve ZeroMQ."""

from __future__ import annotations

import logging
import traceback

from sgl.runtime.entry.process_utils import configure_child_process
from sgl.runtime.scheduler.watchdog import Watchdog

logger = logging.getLogger(__name__)


def run_scheduler_process(server_args, port_args, pipe_writer) -> None:
    import zmq

    configure_child_process("scheduler", server_args)
    try:
        scheduler = _build(server_args)
    except Exception as e:  # report the cause to the launcher instead of dying silently
        logger.error("Scheduler failed to start: %s\n%s", e, traceback.format_exc())
        pipe_writer.send({"status": "error", "message": f"{type(e).__name__}: {e}"})
        return
    ctx = zmq.Context(2)
    recv = ctx.socket(zmq.PULL)
    recv.bind(port_args.scheduler_input_ipc_name)
    send = ctx.socket(zmq.PUSH)
    send.connect(port_args.detokenizer_ipc_name)
    pipe_writer.send({"status": "ready", **scheduler.internal_state()})
    poller = zmq.Poller()
    poller.register(recv, zmq.POLLIN)
    watchdog = Watchdog(server_args.watchdog_timeout).start()
    scheduler.event_loop(lambda: _drain(recv), send.send_pyobj, lambda: poller.poll(1000), watchdog)


def _build(server_args):
    from sgl.runtime.scheduler.scheduler import Scheduler

    tokenizer = None
    if not server_args.skip_tokenizer_init:
        from sgl.runtime.models.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(server_args.tokenizer_path, server_args.tokenizer_mode, server_args.trust_remote_code)
    return Scheduler(server_args, tokenizer=tokenizer)


def _drain(sock) -> list:
    import zmq

    msgs = []
    while True:
        try:
            msgs.append(sock.recv_pyobj(zmq.NOBLOCK))
        except zmq.ZMQError:
            return msgs
