"""Which scheduler gets a request: the one scheduler, or with `--dp-size N` one of N data-parallel
replicas (each a whole scheduler, tensor-parallel or not, with its own KV cache).

The dispatcher runs in the tokenizer manager's process, so no process sits between it and the
schedulers. It picks a replica per request with `--load-balance-method`: `round_robin`, or
`shortest_queue` (the fewest requests in flight from here); both are the router's HTTP-free
policies (runtime/router/policy.py). Aborts follow their request; control messages (flush the
cache, internal state) go to every replica, and `merge_states` makes one report of theirs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from sgl.runtime.router.policy import PolicyConfig, make_policy

# internal-state keys that are limits of one replica: the smallest holds for every request
LIMIT_KEYS = ("max_req_input_len", "max_req_len", "max_running_requests")


class SchedulerDispatcher:
    def __init__(self, ctx, ipc_names: Sequence[str], method: str = "round_robin"):
        import zmq

        self.sockets = []
        for name in ipc_names:
            sock = ctx.socket(zmq.PUSH)
            sock.connect(name)
            self.sockets.append(sock)
        self.replicas = [str(i) for i in range(len(self.sockets))]
        self.policy = make_policy(method, PolicyConfig())
        self.loads: Dict[str, int] = {r: 0 for r in self.replicas}
        self.owner: Dict[str, int] = {}  # rid -> replica index, while in flight

    @property
    def size(self) -> int:
        return len(self.sockets)

    def send_request(self, rid: str, msg: Any) -> None:
        index = 0 if self.size == 1 else int(self.policy.select("", self.replicas, self.loads).url)
        self.owner[rid] = index
        self.loads[self.replicas[index]] += 1
        self.sockets[index].send_pyobj(msg)

    def send_to_owner(self, rid: str, msg: Any) -> None:
        """A message about an in-flight request (an abort) to the replica that has it."""
        index = self.owner.get(rid)
        if index is not None:
            self.sockets[index].send_pyobj(msg)

    def finished(self, rid: str) -> None:
        index = self.owner.pop(rid, None)
        if index is not None:
            self.loads[self.replicas[index]] -= 1

    def send_all(self, msg: Any) -> None:
        for sock in self.sockets:
            sock.send_pyobj(msg)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)


def merge_states(states: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One internal-state report of several replicas: counters summed, limits the smallest, the
    KV integrity "ok" only if every replica's is, and each replica's own report under "dp_states"."""
    if len(states) == 1:
        return states[0]
    merged: Dict[str, Any] = {}
    for key, value in states[0].items():
        values = [s.get(key) for s in states]
        if key in LIMIT_KEYS:
            merged[key] = min(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        else:
            merged[key] = value
    errors = [s["kv_integrity"] for s in states if s.get("kv_integrity", "ok") != "ok"]
    merged["kv_integrity"] = "ok" if not errors else "; ".join(errors)
    merged["dp_states"] = states
    return merged
