"""`RuntimeEndpoint`: a client for a running sgl (or SGLang) server's native HTTP API."""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, Iterator, Optional, Union

import requests

from sgl.backend.srt import Request, SrtBackend

# Long generations on a busy CPU server can take minutes; never hang forever on a dead socket.
_READ_TIMEOUT_S = 3 * 3600


class RuntimeEndpoint(SrtBackend):
    stream_text_is_cumulative = True  # every SSE event carries the whole text so far

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        verify: Optional[Union[bool, str]] = None,
        chat_template_name: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = verify
        self._local = threading.local()
        self.model_info = self._get_json("/get_model_info")
        self.chat_template = self._pick_chat_template(self._template_info(), chat_template_name)

    def _template_info(self) -> Dict[str, Any]:
        # Servers that predate `chat_template` in /get_model_info still report the
        # --chat-template flag (a name, a file, or Jinja source) in /get_server_info.
        if "chat_template" in self.model_info:
            return self.model_info
        try:
            server_info = self.get_server_info() or {}
        except (RuntimeError, requests.RequestException, ValueError):
            server_info = {}
        return {**self.model_info, "chat_template": server_info.get("chat_template")}

    # ---- HTTP -----------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        # One session per thread: requests.Session is not thread-safe, and programs run in threads.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _request(self, method: str, path: str, payload: Any = None, stream: bool = False) -> requests.Response:
        kwargs: Dict[str, Any] = {"headers": self._headers(), "stream": stream, "timeout": (30, _READ_TIMEOUT_S)}
        if payload is not None:
            kwargs["json"] = payload
        if self.verify is not None:
            kwargs["verify"] = self.verify
        response = self._session().request(method, self.base_url + path, **kwargs)
        _check(response, path)
        return response

    def _get_json(self, path: str) -> Any:
        return self._request("GET", path).json()

    # ---- SrtBackend transport ---------------------------------------------------------------
    def _send(self, request: Request) -> Any:
        return self._request("POST", "/generate", request).json()

    def _send_stream(self, request: Request) -> Iterator[Dict[str, Any]]:
        response = self._request("POST", "/generate", request, stream=True)
        with response:
            for line in response.iter_lines(decode_unicode=False):
                event = _parse_sse_line(line)
                if event is _DONE:
                    break
                if event is not None:
                    yield event

    # ---- admin ------------------------------------------------------------------------------
    def flush_cache(self) -> str:
        return self._request("POST", "/flush_cache").text

    def get_server_info(self) -> Dict[str, Any]:
        try:
            return self._get_json("/get_server_info")
        except RuntimeError as e:
            if "404" not in str(e):
                raise
            return self._get_json("/server_info")  # newer SGLang servers renamed the route

    def start_profile(self) -> None:
        self._request("POST", "/start_profile")

    def stop_profile(self) -> None:
        self._request("POST", "/stop_profile")

    def concatenate_and_append(self, src_rids, dst_rid) -> None:
        raise NotImplementedError("The server has no KV concatenation route; use join() text concatenation")


_DONE = object()


def _parse_sse_line(line: bytes) -> Any:
    """One `data: {...}` line of the /generate SSE stream -> dict, _DONE, or None (not data)."""
    text = line.decode("utf-8").strip()
    if not text.startswith("data:"):
        return None
    body = text[len("data:"):].strip()
    if body == "[DONE]":
        return _DONE
    event = json.loads(body)
    if isinstance(event, dict) and "error" in event:
        raise RuntimeError(f"/generate stream failed: {_error_message(event)}")
    return event


def _check(response: requests.Response, path: str) -> None:
    if response.status_code == 200:
        return
    try:
        body = response.json()
    except ValueError:
        body = response.text
    raise RuntimeError(f"{path} failed with HTTP {response.status_code}: {_error_message(body)}")


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)
