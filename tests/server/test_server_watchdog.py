"""--watchdog-timeout end to end: a step longer than the timeout ends the scheduler, the cause is
logged, and the server exits non-zero through its child-death handling."""

from __future__ import annotations

import requests

from sgltest.server_process import ServerProcess


def test_a_step_past_the_watchdog_timeout_stops_the_server():
    # No warm-up, so no step runs before the request; a 600-token prefill on CPU takes far longer
    # than 20 ms.
    proc = ServerProcess(["--max-total-tokens", "2048", "--skip-server-warmup", "--watchdog-timeout", "0.02"])
    try:
        body = {"text": "word " * 600, "sampling_params": {"max_new_tokens": 4}}
        try:
            response = requests.post(proc.url + "/generate", json=body, timeout=60)
            assert response.status_code >= 500, response.text
        except requests.ConnectionError:
            pass  # the server may already be gone
        assert proc.proc.wait(30) == 1
        log = proc.log_text()
        assert "Watchdog fired: a scheduler step (forward batch) has been running for" in log
        assert "--watchdog-timeout 0.02 s" in log
        assert "scheduler process died (exit code 1)" in log
    finally:
        proc.stop()
