"""Every example runs end to end on the default model, against the session's launched server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EXAMPLES = sorted(f for f in os.listdir(EXAMPLES_DIR) if f.endswith(".py") and f != "example_backend.py")
# Example file names must not shadow installed modules (the script directory comes first on sys.path).
# Smaller runs where an example offers the option: generating on a CPU is what these tests cost.
EXAMPLE_ARGS = {"fork_join.py": ["--points", "2"], "run_batch.py": ["--num", "4"]}


def test_all_examples_are_listed():
    assert set(EXAMPLES) == {"quick_start.py", "json_decode.py", "regex_decode.py", "fork_join.py",
                             "react_tool_loop.py", "multi_turn_chat.py", "run_batch.py", "streaming.py",
                             "function_calling_agent.py"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, real_server):
    path = os.path.join(EXAMPLES_DIR, name)
    with open(path) as f:
        assert "Usage:" in f.read(600), f"{name} must open with a Usage: docstring"
    endpoint = getattr(real_server, "endpoint", real_server)  # a Runtime, or a RuntimeEndpoint
    env = {**os.environ, "SGL_BACKEND_URL": endpoint.base_url, "SGL_API_KEY": endpoint.api_key or ""}
    command = [sys.executable, path, *EXAMPLE_ARGS.get(name, [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
