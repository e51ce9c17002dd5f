"""Runs the conformance suite (programs.py) on every backend of `program_backend`."""

from __future__ import annotations

import pytest
from sgltest.programs import ALL_PROGRAMS


@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=[p.__name__ for p in ALL_PROGRAMS])
def test_program(program, program_backend):
    program()
