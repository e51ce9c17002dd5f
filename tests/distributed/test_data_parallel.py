"""--dp-size: the dispatcher's policies and merged reports (no processes), and two replicas of the
default model in one engine: TP=1's greedy tokens, requests spread over both, one flush for all."""

from __future__ import annotations

import pytest
import zmq

from sgl.runtime.tokenizer.dispatcher import SchedulerDispatcher, merge_states
from sgltest.tp_ranks import NEW_TOKENS, assert_same_greedy

GREEDY = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}


class _Socket:
    def __init__(self):
        self.sent = []

    def send_pyobj(self, msg):
        self.sent.append(msg)

    def close(self, linger=0):
        pass


def _dispatcher(n: int, method: str) -> SchedulerDispatcher:
    ctx = zmq.Context()
    dispatcher = SchedulerDispatcher(ctx, [f"inproc://dp{i}" for i in range(n)], method)
    dispatcher.sockets = [_Socket() for _ in range(n)]
    return dispatcher


def _where(dispatcher) -> list:
    return [len(s.sent) for s in dispatcher.sockets]


def test_round_robin_and_aborts_follow_their_request():
    d = _dispatcher(3, "round_robin")
    for i in range(4):
        d.send_request(f"r{i}", f"req{i}")
    assert _where(d) == [2, 1, 1]
    d.send_to_owner("r1", "abort r1")
    assert d.sockets[1].sent == ["req1", "abort r1"]
    d.finished("r1")
    d.send_to_owner("r1", "late abort")  # finished: nowhere
    d.send_all("flush")
    assert _where(d) == [3, 3, 2]


def test_shortest_queue_counts_requests_in_flight():
    d = _dispatcher(2, "shortest_queue")
    d.send_request("a", 1)
    d.send_request("b", 2)
    d.send_request("c", 3)  # a tie: the first replica
    assert _where(d) == [2, 1]
    d.finished("a")
    d.finished("c")
    d.send_request("d", 4)  # replica 0 has none in flight now
    assert _where(d) == [3, 1] and d.loads == {"0": 1, "1": 1}


def test_merge_states():
    a = {"max_req_input_len": 100, "num_running_reqs": 2, "kv_integrity": "ok", "max_total_num_tokens": 10}
    b = {"max_req_input_len": 90, "num_running_reqs": 1, "kv_integrity": "error: leak", "max_total_num_tokens": 12}
    merged = merge_states([a, b])
    assert merged["max_req_input_len"] == 90 and merged["num_running_reqs"] == 3
    assert merged["max_total_num_tokens"] == 22 and merged["kv_integrity"] == "error: leak"
    assert merged["dp_states"] == [a, b] and merge_states([a]) is a


def test_multi_node_data_parallel_is_refused():
    from sgl.runtime.server_args import ServerArgs

    with pytest.raises(ValueError, match="--dp-size 2 with --nnodes 2 is not supported"):
        ServerArgs(device="cpu", dp_size=2, tp_size=2, nnodes=2, dist_init_addr="h:1")


def test_two_replicas_match_tp1(tp1_reference, prompt_ids, default_gguf):
    from sgl.runtime.entry.engine import Engine

    with Engine(model_path=default_gguf, dp_size=2, dtype="float32", max_total_tokens=2048, random_seed=1) as engine:
        results = engine.generate(input_ids=prompt_ids, sampling_params=GREEDY, return_logprob=True)
        entries = [r["meta_info"]["output_token_logprobs"] for r in results]
        assert_same_greedy({i: ([t for _, t, _ in e], [lp for lp, _, _ in e]) for i, e in enumerate(entries)},
                           tp1_reference)
        info = engine.get_server_info()
        assert info["kv_integrity"] == "ok" and len(info["dp_states"]) == 2
        # round robin: each replica prefilled half the prompts, which its radix cache now holds
        assert all(state["cached_tokens"] > 0 for state in info["dp_states"])
        assert engine.flush_cache()
        assert engine.get_server_info()["cached_tokens"] == 0
