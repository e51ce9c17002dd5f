"""CPU threading defaults of the runtime's processes (runtime/executor/cpu_threads.py)."""

from __future__ import annotations

import pytest

from sgl.runtime.executor import cpu_threads as ct


def test_scheduler_gets_every_core_unless_overridden(monkeypatch):
    monkeypatch.delenv(ct.THREADS_ENV, raising=False)
    assert ct.cpu_threads() == ct.available_cores() >= 1
    monkeypatch.setenv(ct.THREADS_ENV, "3")
    assert ct.cpu_threads() == 3
    for bad in ("0", "-2", "two", ""):
        monkeypatch.setenv(ct.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=ct.THREADS_ENV):
            ct.cpu_threads()


def test_child_environments(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ct.child_env("scheduler", "cpu")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in ct.child_env("scheduler", "cuda")
    assert "OMP_NUM_THREADS" not in ct.child_env("scheduler", "cpu")
    assert ct.child_env("detokenizer", "cpu")["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own settings win
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert ct.child_env("scheduler", "cpu")["OMP_WAIT_POLICY"] == "ACTIVE"
    assert ct.child_env("detokenizer", "cpu")["OMP_NUM_THREADS"] == "2"
