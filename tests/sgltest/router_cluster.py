"""Router test helpers: fake workers (`fake_worker.py` subprocesses) and the router on a thread."""

import os
import signal
import subprocess
import sys
import threading
import time

import requests

from sgltest.server_process import free_port

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_worker.py")


class FakeWorker:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, FAKE, "--port", str(self.port)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("fake worker did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def received(self):
        return requests.get(self.url + "/fake/requests", timeout=5).json()


class RouterThread:
    def __init__(self, urls, **kw):
        import uvicorn

        from sgl.runtime.router.app import Router, create_app
        from sgl.runtime.router.router_args import RouterArgs

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = RouterArgs(worker_urls=urls, port=self.port, health_check_interval_secs=0.3, **kw)
        self.router = Router(args)
        config = uvicorn.Config(create_app(self.router), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)

    def workers(self):
        return {w["url"]: w for w in requests.get(self.url + "/list_workers", timeout=5).json()["workers"]}


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")
