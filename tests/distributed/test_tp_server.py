"""Tensor parallelism end to end on the default model (SmolLM2-135M, float32, gloo on CPU): the
greedy tokens of TP=1 from a TP=2 server (9 query / 3 KV heads: an uneven head split; also a
regex-constrained request), from a
TP=3 engine, and from two launches standing for two nodes (--nnodes 2); a rank killed with
SIGKILL ends the server with a non-zero exit and a log line naming it; shutdowns leave no
process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import requests

from sgltest.server_process import ServerProcess, children_of, free_port, pid_alive
from sgltest.tp_ranks import NEW_TOKENS, assert_same_greedy

FLAGS = ["--dtype", "float32", "--max-total-tokens", "2048", "--random-seed", "1"]
GREEDY = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}


def _all_gone(pids: List[int], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(pid_alive(p) for p in pids)


def _rank_pids(pids: List[int]) -> Dict[int, int]:
    ranks = {}
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
        ranks.update({int(a.split("=")[1]): pid for a in args if a.startswith("--tp-rank=")})
    return ranks


def _greedy_over_http(url: str, prompt_ids) -> dict:
    body = {"input_ids": prompt_ids, "sampling_params": GREEDY, "return_logprob": True}
    results = requests.post(url + "/generate", json=body, timeout=300).json()
    return {i: _ids_and_logprobs(r) for i, r in enumerate(results)}


def _ids_and_logprobs(result: dict):
    entries = result["meta_info"]["output_token_logprobs"]
    return [tid for _, tid, _ in entries], [lp for lp, _, _ in entries]


def test_tp2_server_matches_tp1_then_a_killed_rank_ends_it(tp1_reference, prompt_ids):
    server = ServerProcess(["--tp-size", "2", *FLAGS])
    try:
        assert_same_greedy(_greedy_over_http(server.url, prompt_ids), tp1_reference)
        # constrained decoding: rank 0 masks the logits the ranks gathered
        body = {"text": "Is the sky blue? Answer:", "sampling_params": {"regex": " (yes|no)", "max_new_tokens": 4}}
        assert requests.post(server.url + "/generate", json=body, timeout=120).json()["text"] in (" yes", " no")
        children = server.children()
        ranks = _rank_pids(children)
        assert sorted(ranks) == [0, 1] and len(children) == 3  # two ranks and the detokenizer
        killed_at = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        assert server.proc.wait(15) != 0
        assert time.monotonic() - killed_at < 15
        assert "scheduler (TP rank 1) process died (exit code -9)" in server.log_text()
        assert _all_gone(children), "runtime processes outlived the server"
    finally:
        server.stop()


def test_tp3_engine_matches_tp1(tp1_reference, prompt_ids, default_gguf):
    from sgl.runtime.entry.engine import Engine

    with Engine(model_path=default_gguf, tp_size=3, dtype="float32", max_total_tokens=2048, random_seed=1) as engine:
        results = engine.generate(input_ids=prompt_ids, sampling_params=GREEDY, return_logprob=True)
        assert_same_greedy({i: _ids_and_logprobs(r) for i, r in enumerate(results)}, tp1_reference)
        pids = [p.pid for p in engine.core.procs]
    assert _all_gone(pids)


def test_two_nodes_match_tp1_and_stop_together(tp1_reference, prompt_ids):
    """Node 1 runs rank 1 only; node 0 serves HTTP with rank 0. SIGTERM to node 0 stops both (0 exits)."""
    common = ["--tp-size", "2", "--nnodes", "2", "--dist-init-addr", f"127.0.0.1:{free_port()}", *FLAGS]
    log = tempfile.NamedTemporaryFile(prefix="sgl-node1-", suffix=".log", delete=False)
    node1 = subprocess.Popen([sys.executable, "-m", "sgl.launch_server", *common, "--node-rank", "1"],
                             stdout=log, stderr=subprocess.STDOUT)
    node0 = None
    try:
        node0 = ServerProcess([*common, "--node-rank", "0"])
        assert_same_greedy(_greedy_over_http(node0.url, prompt_ids), tp1_reference)
        node0_children = node0.children()
        node1_children = children_of(node1.pid)
        assert list(_rank_pids(node0_children)) == [0] and list(_rank_pids(node1_children)) == [1]
        assert node0.terminate(30) == 0
        assert node1.wait(30) == 0, open(log.name).read()[-3000:]
        assert "Rank 0 stopped this node's ranks" in open(log.name).read()
        assert _all_gone(node0_children + node1_children)
    finally:
        if node0 is not None:
            node0.stop()
        if node1.poll() is None:
            node1.send_signal(signal.SIGTERM)
            node1.wait(30)
        log.close()
        os.unlink(log.name)

