"""Fixtures of the frontend-language tests.

The conformance suite (`sgltest/programs.py`) runs against every backend in `program_backend`:
  * "fake":      EngineBackend over a FakeEngine (in-process, deterministic);
  * "fake-http": RuntimeEndpoint over HTTP to the fake server (tests the wire protocol);
  * "real":      only when requested, once per session, on the default model:
                 SGL_TEST_REAL_BACKEND=1 starts `sgl.Runtime()` (a server subprocess; JSON keyword
                 arguments for it may go in SGL_TEST_RUNTIME_ARGS);
                 SGL_TEST_REAL_BACKEND=engine uses an in-process `sgl.Engine()` (same arguments);
                 SGL_TEST_BACKEND_URL=http://host:port uses an already running server.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, List

import pytest

import sgl
from sgl.backend.fake import FakeEngine
from sgltest.templates import SMOLLM2_TEMPLATE


def real_backend_requested() -> bool:
    return bool(os.environ.get("SGL_TEST_REAL_BACKEND") or os.environ.get("SGL_TEST_BACKEND_URL"))


def backend_kinds() -> List[str]:
    return ["fake", "fake-http"] + (["real"] if real_backend_requested() else [])


@pytest.fixture(scope="session")
def fake_http_server() -> Iterator[Any]:
    from sgltest.fake_server import serve

    httpd, state = serve(FakeEngine(chat_template=SMOLLM2_TEMPLATE, model_path="fake/SmolLM2-135M-Instruct"))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()


@pytest.fixture(scope="session")
def real_backend() -> Iterator[Any]:
    if not real_backend_requested():
        pytest.skip("set SGL_TEST_REAL_BACKEND=1 or SGL_TEST_BACKEND_URL to run against a real server")
    url = os.environ.get("SGL_TEST_BACKEND_URL")
    if url:
        yield sgl.RuntimeEndpoint(url, api_key=os.environ.get("SGL_TEST_API_KEY"))
        return
    kwargs = json.loads(os.environ.get("SGL_TEST_RUNTIME_ARGS") or "{}")
    if os.environ.get("SGL_TEST_REAL_BACKEND") == "engine":
        engine = sgl.Engine(**kwargs)
        yield sgl.EngineBackend(engine)
        engine.shutdown()
        return
    try:
        runtime = sgl.Runtime(**kwargs)
    except RuntimeError as e:
        if "No module named" in str(e):
            pytest.skip(f"the server is not available yet: {e}")
        raise
    yield runtime
    runtime.shutdown()


def _make_backend(kind: str, request: Any) -> Any:
    if kind == "fake":
        return sgl.EngineBackend(FakeEngine(chat_template=SMOLLM2_TEMPLATE, model_path="fake/SmolLM2-135M-Instruct"))
    if kind == "fake-http":
        return sgl.RuntimeEndpoint(request.getfixturevalue("fake_http_server").url)
    return request.getfixturevalue("real_backend")


@pytest.fixture(params=backend_kinds())
def program_backend(request: Any) -> Iterator[Any]:
    """Sets the default backend for the duration of one test (what the suite programs use)."""
    backend = _make_backend(request.param, request)
    previous = sgl.global_config.default_backend
    sgl.set_default_backend(backend)
    try:
        yield backend
    finally:
        sgl.global_config.default_backend = previous


@pytest.fixture
def fake_backend() -> Iterator[Any]:
    """A fresh fake engine backend set as the default (its engine is `.engine`)."""
    backend = sgl.EngineBackend(FakeEngine())
    previous = sgl.global_config.default_backend
    sgl.set_default_backend(backend)
    try:
        yield backend
    finally:
        sgl.global_config.default_backend = previous
