"""Process lifecycle, each on its own short-lived server: SIGTERM shuts down cleanly with no
orphans; a dead scheduler makes in-flight requests fail and the server exit non-zero in < 10 s."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import requests

from sgltest.server_process import ServerProcess, pid_alive

SMALL = ["--max-total-tokens", "2048", "--skip-server-warmup"]


def test_sigterm_shuts_down_cleanly():
    proc = ServerProcess(SMALL)
    try:
        children = proc.children()
        assert len(children) >= 2
        assert requests.get(proc.url + "/health", timeout=30).status_code == 200
        assert proc.terminate(30) == 0
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(pid) for pid in children), "orphaned runtime processes"
    finally:
        proc.stop()


def _stream_until_error(url: str, out: dict) -> None:
    body = {"text": "Count forever:", "stream": True, "sampling_params": {"max_new_tokens": 1500, "ignore_eos": True}}
    try:
        with requests.post(url + "/generate", json=body, stream=True, timeout=60) as r:
            out["lines"] = [line for line in r.iter_lines(decode_unicode=True) if line]
    except requests.RequestException as e:
        out["exception"] = e


def test_scheduler_death_exits_nonzero_within_10s():
    proc = ServerProcess(SMALL)
    try:
        scheduler = proc.child_pid("scheduler")
        detokenizer = proc.child_pid("detokenizer")
        in_flight: dict = {}
        reader = threading.Thread(target=_stream_until_error, args=(proc.url, in_flight))
        reader.start()
        time.sleep(3)  # let the request start streaming
        killed_at = time.monotonic()
        os.kill(scheduler, signal.SIGKILL)
        code = proc.proc.wait(10)
        assert time.monotonic() - killed_at < 10
        assert code != 0
        reader.join(30)
        lines = in_flight.get("lines", [])
        assert lines and lines[-1] == "data: [DONE]", in_flight
        error = json.loads(lines[-2][len("data: "):])["error"]
        assert "scheduler process died" in error["message"]
        assert "scheduler process died" in proc.log_text()  # the cause is logged
        deadline = time.monotonic() + 5
        while pid_alive(detokenizer) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(detokenizer)
    finally:
        proc.stop()
