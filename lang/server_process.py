"""`Runtime`: start a server in a subprocess and use it as a backend (`.endpoint`).

The server is `python -m sgl.launch_server` with the keyword arguments turned into flags
(`model_path="x"` -> `--model-path x`, `True` -> a bare switch). Its output goes to a log file
whose tail is shown when startup fails. The process runs in its own session so `shutdown()`
(also registered with atexit) can kill the whole tree it spawned.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
import time
from typing import Any, AsyncIterator, Dict, List, Optional

import requests

from sgl.backend.runtime_endpoint import RuntimeEndpoint
from sgl.utils import find_free_port, kill_process_tree, python_module_command

_POLL_S = 0.5
_LOG_TAIL_LINES = 40


class Runtime:
    # The module run as the server; tests point it at a stand-in server.
    server_module = "sgl.launch_server"

    def __init__(self, log_level: str = "error", launch_timeout: float = 300.0, *args: Any, **kwargs: Any) -> None:
        if args:
            raise ValueError("Runtime takes server arguments as keywords (e.g. model_path=...), "
                             f"got positional {args!r}")
        if not isinstance(launch_timeout, (int, float)) or launch_timeout <= 0:
            raise ValueError(f"launch_timeout must be a positive number of seconds, got {launch_timeout!r}")
        self.process: Optional[subprocess.Popen] = None
        host = kwargs.pop("host", "127.0.0.1")
        port = find_free_port(host, int(kwargs.pop("port", 30000)))
        self.server_args: Dict[str, Any] = {**kwargs, "host": host, "port": port, "log_level": log_level}
        self.url = f"http://{host}:{port}"
        self.generate_url = self.url + "/generate"
        self.api_key = kwargs.get("api_key")
        self._log = tempfile.NamedTemporaryFile(prefix="sgl-runtime-", suffix=".log", delete=False)
        self.log_path = self._log.name
        self._keep_log = False
        self._start()
        try:
            self._wait_ready(float(launch_timeout))
            self.endpoint = RuntimeEndpoint(self.url, api_key=self.api_key)
        except BaseException:
            self._keep_log = True  # the error message points at it
            self.shutdown()
            raise

    # ---- process ----------------------------------------------------------------------------
    def _command(self) -> List[str]:
        return python_module_command(self.server_module, *server_flags(self.server_args))

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self._command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.process.pid
        atexit.register(self.shutdown)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with requests.Session() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"The server exited with code {self.process.returncode} during startup. "
                                       f"Log tail ({self.log_path}):\n{self.log_tail()}")
                if self._ready(session):
                    return
                time.sleep(_POLL_S)
        raise TimeoutError(f"The server did not become ready within {timeout:.0f}s. "
                           f"Log tail ({self.log_path}):\n{self.log_tail()}")

    def _ready(self, session: requests.Session) -> bool:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            for path in ("/get_model_info", "/health_generate"):
                if session.get(self.url + path, headers=headers, timeout=60).status_code != 200:
                    return False
        except requests.RequestException:
            return False
        return True

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def shutdown(self) -> None:
        """Kill the server and every process it started; safe to call more than once."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                kill_process_tree(process.pid, process=process)
            process.wait(timeout=10)
        atexit.unregister(self.shutdown)
        if not self._log.closed:
            self._log.close()
            if not self._keep_log:
                _remove(self.log_path)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ---- conveniences over HTTP (SGLang's Runtime helpers) ----------------------------------
    def cache_prefix(self, prefix: str) -> None:
        self.endpoint.cache_prefix(prefix)

    def flush_cache(self) -> Any:
        return self.endpoint.flush_cache()

    def start_profile(self) -> None:
        self.endpoint.start_profile()

    def stop_profile(self) -> None:
        self.endpoint.stop_profile()

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def generate(self, prompt: Any, sampling_params: Optional[Dict[str, Any]] = None, return_logprob: bool = False,
                 logprob_start_len: Optional[int] = None, top_logprobs_num: Optional[int] = None,
                 lora_path: Optional[Any] = None) -> str:
        """POST /generate; returns the reply as a JSON string (as SGLang's Runtime does)."""
        payload = {"text": prompt, "sampling_params": sampling_params or {}, "return_logprob": return_logprob,
                   "logprob_start_len": logprob_start_len, "top_logprobs_num": top_logprobs_num,
                   "lora_path": lora_path}
        payload = {k: v for k, v in payload.items() if v is not None}
        response = requests.post(self.generate_url, json=payload, headers=self._headers(), timeout=3600)
        _raise_for(response)
        return json.dumps(response.json())

    def encode(self, prompt: Any) -> str:
        response = requests.post(self.url + "/encode", json={"text": prompt}, headers=self._headers(), timeout=3600)
        _raise_for(response)
        return json.dumps(response.json())

    async def async_generate(self, prompt: Any, sampling_params: Optional[Dict[str, Any]] = None) -> AsyncIterator[str]:
        """Stream a generation; yields the new text of each SSE event."""
        import aiohttp

        payload = {"text": prompt, "sampling_params": sampling_params or {}, "stream": True}
        seen = 0
        timeout = aiohttp.ClientTimeout(total=3 * 3600)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
            async with session.post(self.generate_url, json=payload, headers=self._headers()) as response:
                if response.status != 200:
                    raise RuntimeError(f"/generate failed with HTTP {response.status}: {await response.text()}")
                async for line in response.content:
                    text = _sse_text(line)
                    if text is None:
                        continue
                    yield text[seen:]
                    seen = max(seen, len(text))

    add_request = async_generate

    async def get_server_info(self) -> Dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession(trust_env=True) as session:
            async with session.get(self.url + "/get_server_info", headers=self._headers()) as response:
                if response.status != 200:
                    raise RuntimeError(f"/get_server_info failed with HTTP {response.status}: {await response.text()}")
                return await response.json()

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:  # interpreter teardown: best effort only
            pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _sse_text(line: bytes) -> Optional[str]:
    from sgl.backend.runtime_endpoint import _DONE, _parse_sse_line

    event = _parse_sse_line(line)
    if event is None or event is _DONE:
        return None
    return event.get("text", "")


def _raise_for(response: requests.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.path_url} failed with HTTP {response.status_code}: {response.text}")


def server_flags(server_args: Dict[str, Any]) -> List[str]:
    """CLI flags for keyword server arguments (None and False are left to the server's defaults)."""
    flags: List[str] = []
    for name, value in server_args.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags
