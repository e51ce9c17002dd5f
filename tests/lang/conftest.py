"""Fixtures of the frontend-language tests.

The conformance suite (`sgltest/programs.py`) and the other real-model checks run on the default
model through both real backends (`real_backend`), each started once per test session:
  * "engine": `sgl.EngineBackend` over an in-process `sgl.Engine()`;
  * "server": `sgl.Runtime()`, i.e. `python -m sgl.launch_server` in a subprocess, over HTTP.
JSON keyword arguments for both may go in SGL_TEST_RUNTIME_ARGS (e.g. '{"model_path": "..."}');
SGL_TEST_BACKEND_URL=http://host:port (and SGL_TEST_API_KEY) replaces the launched server with
an already running one.

Tests that must control the model's answers or see what reached the engine use the deterministic
FakeEngine: `fake_backend` in process, or `sgltest.fake_server.FakeServer` (the real HTTP app over
a FakeEngine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Any, Dict, Iterator

import pytest
from sgltest.fake_engine import FakeEngine
from sgltest.server_process import free_port

import sgl

# Both real backends get one configuration: a seeded scheduler, so sampled programs repeat, and
# a KV pool far above what the programs use but below the CPU default (a quarter of RAM, at most
# 4 x the context), since in a full test run both stay alive until the session ends.
_DEFAULT_RUNTIME_ARGS = {"random_seed": 1, "max_total_tokens": 8192}


def _runtime_kwargs() -> Dict[str, Any]:
    return {**_DEFAULT_RUNTIME_ARGS, **json.loads(os.environ.get("SGL_TEST_RUNTIME_ARGS") or "{}")}


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # A test run stopped with SIGTERM (a CI timeout) still tears fixtures down, and so its servers.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def real_engine() -> Iterator[Any]:
    """`sgl.EngineBackend` over an in-process `sgl.Engine()` on the default model."""
    with _sigterm_as_interrupt():
        engine = sgl.Engine(**_runtime_kwargs())
        try:
            yield sgl.EngineBackend(engine)
        finally:
            engine.shutdown()


@pytest.fixture(scope="session")
def real_server() -> Iterator[Any]:
    """`sgl.Runtime()` (a launched server) on the default model, or SGL_TEST_BACKEND_URL's server."""
    url = os.environ.get("SGL_TEST_BACKEND_URL")
    if url:
        yield sgl.RuntimeEndpoint(url, api_key=os.environ.get("SGL_TEST_API_KEY"))
        return
    with _sigterm_as_interrupt():
        # A port the OS picked: Runtime's default (30000 and up) races other test runs on the host.
        runtime = sgl.Runtime(**{"port": free_port(), **_runtime_kwargs()})
        try:
            yield runtime
        finally:
            runtime.shutdown()


@pytest.fixture(params=["engine", "server"])
def real_backend(request: Any) -> Any:
    """Each real backend in turn (both live for the whole session once started)."""
    return request.getfixturevalue(f"real_{request.param}")


@contextlib.contextmanager
def _default_backend(backend: Any) -> Iterator[Any]:
    previous = sgl.global_config.default_backend
    sgl.set_default_backend(backend)
    try:
        yield sgl.global_config.default_backend
    finally:
        sgl.global_config.default_backend = previous


@pytest.fixture
def program_backend(real_backend: Any) -> Iterator[Any]:
    """A real backend set as the default for one test (what the suite programs use)."""
    with _default_backend(real_backend) as backend:
        yield backend


@pytest.fixture
def fake_backend() -> Iterator[Any]:
    """A fresh fake engine backend set as the default (its engine is `.engine`)."""
    with _default_backend(sgl.EngineBackend(FakeEngine())) as backend:
        yield backend

