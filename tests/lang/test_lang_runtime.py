"""sgl.Runtime: subprocess launch, readiness, failures with the log tail, clean shutdown.

`python -m sgltest.fake_server` (the real HTTP app over a FakeEngine: no model to load) plays
`python -m sgl.launch_server`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile

import pytest

import sgl
from sgl.server_process import Runtime, server_flags

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _logs_in_tmp_path(tmp_path, monkeypatch):
    # Server logs of failed starts are kept on purpose; keep these tests' logs out of /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(autouse=True)
def _sgltest_importable_in_children(monkeypatch):
    # pytest puts tests/ on its own sys.path only; the server child finds sgltest through this.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p))


class FakeRuntime(Runtime):
    def _command(self):
        return [sys.executable, "-m", "sgltest.fake_server", *server_flags(self.server_args)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_launch_serve_and_shutdown():
    runtime = FakeRuntime(port=31000, launch_timeout=60)
    try:
        assert runtime.url.startswith("http://127.0.0.1:")
        assert isinstance(runtime.endpoint, sgl.RuntimeEndpoint)

        @sgl.function
        def one(s):
            s += "Hi" + sgl.gen("x", max_tokens=3)

        assert isinstance(one.run(backend=runtime)["x"], str)  # a Runtime is usable as a backend
        reply = json.loads(runtime.generate("Hello", {"max_new_tokens": 2}))
        assert reply["meta_info"]["completion_tokens"] <= 2

        async def stream():
            return [piece async for piece in runtime.async_generate("Hello", {"max_new_tokens": 3})]

        assert "".join(asyncio.run(stream()))
        port, pid = int(runtime.url.rsplit(":", 1)[1]), runtime.pid
    finally:
        runtime.shutdown()
    assert not _alive(pid) and not _listening(port)
    assert not os.path.exists(runtime.log_path)  # a clean run leaves no log behind
    runtime.shutdown()  # idempotent


def test_picks_the_next_free_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        runtime = FakeRuntime(port=taken, launch_timeout=60)
        try:
            assert int(runtime.url.rsplit(":", 1)[1]) > taken
        finally:
            runtime.shutdown()


def test_startup_crash_reports_the_log_tail(tmp_path):
    with pytest.raises(RuntimeError, match="exited with code 3") as info:
        FakeRuntime(port=31100, launch_timeout=60, crash=True)
    assert "simulated startup failure" in str(info.value)
    assert [p.name for p in tmp_path.glob("sgl-runtime-*.log")] and str(tmp_path) in str(info.value)


def test_startup_timeout_kills_the_server():
    with pytest.raises(TimeoutError, match="did not become ready"):
        FakeRuntime(port=31200, launch_timeout=1, startup_delay=30)


def test_missing_server_module_is_explained():
    class Missing(Runtime):
        server_module = "sgl_no_such_server_module"

    with pytest.raises(RuntimeError, match="No module named"):
        Missing(launch_timeout=60)


def test_keyword_arguments_become_flags():
    flags = server_flags({"model_path": "m.gguf", "tp_size": 2, "disable_radix_cache": True,
                          "enable_metrics": False, "api_key": None, "cuda_graph_bs": [1, 2]})
    assert flags == ["--model-path", "m.gguf", "--tp-size", "2", "--disable-radix-cache", "--cuda-graph-bs", "1", "2"]
    with pytest.raises(ValueError, match="keywords"):
        Runtime("error", 10, "positional")
    with pytest.raises(ValueError, match="launch_timeout"):
        Runtime(launch_timeout=0)
