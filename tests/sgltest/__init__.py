"""Helpers shared by the test suite, imported as `sgltest.<module>` (tests/ is on pytest's
`pythonpath`). Nothing here is a test; conftest.py files hold fixtures only, never names that
test modules import."""
