"""--watchdog-timeout: a scheduler step that runs past the timeout ends the scheduler process,
with a log line saying so; short steps and idle time never fire it."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from sgl.runtime.ipc.messages import TokenizedGenerateReqInput
from sgl.runtime.scheduler.watchdog import EXIT_CODE, Watchdog


def test_fires_on_a_stuck_step(caplog):
    fired = []
    watchdog = Watchdog(0.2, on_fire=fired.append).start()
    with caplog.at_level(logging.ERROR, logger="sgl.runtime.scheduler.watchdog"):
        with watchdog.step():
            deadline = time.monotonic() + 10
            while not fired and time.monotonic() < deadline:
                time.sleep(0.01)
    watchdog.stop()
    assert len(fired) == 1 and fired[0] > 0.2
    assert "Watchdog fired: a scheduler step (forward batch) has been running for" in caplog.text
    assert "--watchdog-timeout 0.2 s" in caplog.text


def test_quiet_while_steps_are_short_and_while_idle():
    fired = []
    watchdog = Watchdog(0.5, on_fire=fired.append).start()
    for _ in range(30):  # 0.6 s of steps in all, none long
        with watchdog.step():
            time.sleep(0.02)
    time.sleep(0.8)  # idle, longer than the timeout
    watchdog.stop()
    assert fired == []


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="watchdog_timeout"):
        Watchdog(0)


def test_default_action_ends_the_process():
    code = ("import logging, time\n"
            "logging.basicConfig()\n"
            "from sgl.runtime.scheduler.watchdog import Watchdog\n"
            "watchdog = Watchdog(0.1).start()\n"
            "with watchdog.step():\n"
            "    time.sleep(60)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_CODE != 0
    assert "Watchdog fired" in proc.stderr


def test_event_loop_times_every_step(make_scheduler, tokenizer):
    """The scheduler's loop runs each step under the watchdog: a forward that hangs fires it."""
    from sgltest.runtime_helpers import make_params

    sched = make_scheduler()
    release = threading.Event()
    fired = []

    def on_fire(elapsed: float) -> None:
        fired.append(elapsed)
        release.set()  # unblock the hung forward so the test can end

    forward = sched.model_runner.forward

    def hung_forward(batch):
        release.wait(5)
        return forward(batch)

    sched.model_runner.forward = hung_forward
    inbox = [[TokenizedGenerateReqInput("w", None, tokenizer.encode("Hello"), make_params(tokenizer, max_new_tokens=2))]]

    class Stop(Exception):
        pass

    give_up = time.monotonic() + 15  # without the hook the loop would never end

    def recv() -> list:
        if fired or time.monotonic() > give_up:
            raise Stop
        return inbox.pop() if inbox else []

    watchdog = Watchdog(0.3, on_fire=on_fire).start()
    with pytest.raises(Stop):
        sched.event_loop(recv, lambda msg: None, lambda: time.sleep(0.01), watchdog)
    watchdog.stop()
    assert len(fired) == 1 and fired[0] > 0.3
