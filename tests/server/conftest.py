"""One server on the default model for the whole test session (startup costs ~20-30 s on CPU)."""

from __future__ import annotations

import signal

import pytest

from sgltest.server_process import ServerProcess

API_KEY = "sgl-test-key"
SERVER_ARGS = ["--max-total-tokens", "8192", "--enable-metrics", "--enable-cache-report",
               "--random-seed", "1"]


def _interrupt(signum, frame):
    # A test run stopped with SIGTERM still tears its fixtures down (and so its servers).
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def server():
    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = ServerProcess(SERVER_ARGS, api_key=API_KEY)
    try:
        yield proc
    finally:
        proc.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def openai_client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def model_name(server) -> str:
    return server.get("/v1/models").json()["data"][0]["id"]
