"""Rank 0 decides every batch; the other tensor-parallel ranks run the same forward.

Only rank 0 runs a Scheduler (queues, prefix cache, KV slot allocation, sampling). Each time its
model runner is about to run a forward it publishes the ForwardPlan (executor/forward_plan.py):

1. the plan's host part, pickled, with `broadcast_object_list` on the gloo `cpu_group` (a
   follower waits there while the server is idle);
2. its tensors (input ids, positions, KV slots, and the values of the req_to_token writes since
   the last plan) concatenated into one int64 tensor, with `broadcast` on the device group, so
   under NCCL nothing waits for the GPU (the input ids of an overlapped decode step may not be
   computed yet when the plan is sent).

A follower rank (`follow`) receives plans, replays the table writes and runs each plan through
its own ModelRunner, which takes part in the forward's collectives. It stops on the stop plan
rank 0 sends when it shuts down cleanly, and exits with an error when a rank's connection
closes (a crashed rank).
"""

from __future__ import annotations

import logging
from typing import List, Optional

import torch
import torch.distributed as dist

from sgl.runtime.distributed.parallel_state import TPGroup
from sgl.runtime.executor.forward_plan import TENSOR_FIELDS, ForwardPlan, apply_writes

logger = logging.getLogger(__name__)

STOP = "stop"


class PlanSender:
    """Rank 0's end: records its req_to_token writes and publishes each plan."""

    def __init__(self, group: TPGroup, req_to_token_pool):
        self.group = group
        self.pool = req_to_token_pool
        self.pool.journal = []
        self.stopped = False

    def publish(self, plan: ForwardPlan) -> None:
        plan.writes = self.pool.take_journal()
        tensors = [getattr(plan, name) for name in TENSOR_FIELDS] + [slots for _, _, slots in plan.writes]
        sizes = [int(t.numel()) for t in tensors]
        header = _host_part(plan)
        _broadcast_object((header, sizes), self.group)
        device = plan.input_ids.device
        payload = torch.cat([t.reshape(-1).to(device, torch.int64) for t in tensors])
        dist.broadcast(payload, src=0, group=self.group.device_group)

    def stop(self) -> None:
        """Tell the followers to exit; only between forwards (rank 0 leaves its loop after a step)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            _broadcast_object((STOP, None), self.group)
        except RuntimeError as e:  # a signal to the whole process group ended them first
            logger.warning("could not tell the other tensor-parallel ranks to stop (%s); they have exited", e)


class PlanReceiver:
    """A follower's end."""

    def __init__(self, group: TPGroup, device: str):
        self.group = group
        self.device = device

    def receive(self) -> Optional[ForwardPlan]:
        """The next plan, with rank 0's tensors; None when rank 0 stops."""
        header, sizes = _broadcast_object(None, self.group)
        if header == STOP:
            return None
        payload = torch.empty(sum(sizes), dtype=torch.int64, device=self.device)
        dist.broadcast(payload, src=0, group=self.group.device_group)
        parts = list(payload.split(sizes))
        plan: ForwardPlan = header
        for name in TENSOR_FIELDS:
            setattr(plan, name, parts.pop(0))
        plan.writes = [(target, col, slots) for (target, col, _), slots in zip(plan.writes, parts)]
        return plan


def follow(model_runner, receiver: PlanReceiver) -> None:
    """Run rank 0's plans until it stops."""
    while True:
        plan = receiver.receive()
        if plan is None:
            logger.info("TP rank %d: rank 0 stopped; exiting", receiver.group.rank)
            return
        apply_writes(model_runner.req_to_token_pool, plan.writes)
        model_runner.run_plan(plan)


def _host_part(plan: ForwardPlan) -> ForwardPlan:
    """The plan without its tensors (they travel in the payload); writes keep their targets."""
    host = ForwardPlan(**{**plan.__dict__, **{name: None for name in TENSOR_FIELDS}})
    host.writes = [(target, col, None) for target, col, _ in plan.writes]
    return host


def _broadcast_object(obj, group: TPGroup):
    box: List[object] = [obj]
    dist.broadcast_object_list(box, src=0, group=group.cpu_group)
    return box[0]
