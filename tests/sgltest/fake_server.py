"""A stand-in sgl server over `FakeEngine`: native routes (/generate with SSE, /get_model_info,
/get_server_info, /flush_cache, /health, /health_generate) and minimal OpenAI routes
(/v1/chat/completions, /v1/completions). Used in-process by `serve()` and as a subprocess by
the Runtime tests (`python fake_server.py --port N [--api-key K] [--crash]`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

from sgl.backend.fake import FakeEngine
from sgl.chat_template import get_chat_template_by_model_path
from sgl.jinja_template import chat_template_from_model_info

_GENERATE_FIELDS = ("text", "input_ids", "sampling_params", "image_data", "return_logprob",
                    "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")


class FakeServer:
    """The server state shared by the request handlers."""

    def __init__(self, engine: FakeEngine, api_key: Optional[str] = None,
                 template_in_model_info: bool = True) -> None:
        self.engine = engine
        self.api_key = api_key
        self.template_in_model_info = template_in_model_info
        self.requests: list = []  # (path, body) of every POST, for assertions
        info = engine.get_model_info()
        self.chat_template = chat_template_from_model_info(info, get_chat_template_by_model_path(info["model_path"]))

    def model_info(self) -> Dict[str, Any]:
        info = self.engine.get_model_info()
        if not self.template_in_model_info:
            info.pop("chat_template", None)  # an older server: the template is in /get_server_info
        return info

    def server_info(self) -> Dict[str, Any]:
        return {**self.engine.get_server_info(), "chat_template": self.engine.chat_template}

    def render_chat(self, messages: list) -> str:
        template = self.chat_template
        if hasattr(template, "render"):
            return template.render(messages, add_generation_prompt=True)
        prompt = template.get_prompt(messages)
        return prompt + template.get_prefix_and_suffix("assistant", messages)[0]


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeSgl/0.1"
    state: FakeServer  # set by serve()

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing ----------------------------------------------------------------------------
    def _authorized(self) -> bool:
        key = self.state.api_key
        if key is None or self.path.startswith("/health"):
            return True
        return self.headers.get("Authorization") == f"Bearer {key}"

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, body: Any) -> None:
        payload = body if isinstance(body, str) else json.dumps(body)
        self.wfile.write(f"data: {payload}\n\n".encode())
        self.wfile.flush()

    # ---- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._authorized():
            return self._send_json(401, {"error": "Unauthorized"})
        routes = {
            "/health": lambda: {},
            "/health_generate": lambda: self.state.engine.generate(prompt="hi", sampling_params={"max_new_tokens": 1}),
            "/get_model_info": self.state.model_info,
            "/get_server_info": self.state.server_info,
        }
        route = routes.get(self.path)
        if route is None:
            return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        self._send_json(200, route())

    def do_POST(self) -> None:
        if not self._authorized():
            return self._send_json(401, {"error": "Unauthorized"})
        body = self._body()
        self.state.requests.append((self.path, body))
        routes = {"/generate": self._generate, "/flush_cache": self._flush,
                  "/v1/chat/completions": self._chat, "/v1/completions": self._completions}
        route = routes.get(self.path)
        if route is None:
            return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        try:
            route(body)
        except ValueError as e:
            self._send_json(400, {"error": {"message": str(e), "type": "BadRequestError", "param": None}})

    def _flush(self, body: Dict[str, Any]) -> None:
        self.state.engine.flush_cache()
        self._send_json(200, "Cache flushed.")

    def _generate(self, body: Dict[str, Any]) -> None:
        kwargs = {k: body[k] for k in _GENERATE_FIELDS if k in body}
        if "text" in kwargs:
            kwargs["prompt"] = kwargs.pop("text")
        if not body.get("stream"):
            return self._send_json(200, self.state.engine.generate(**kwargs))
        chunks = self.state.engine.generate(stream=True, **kwargs)
        first = next(chunks)  # raises ValueError before the headers on a bad request
        self._start_sse()
        text = ""
        for chunk in [first, *chunks]:  # the engine yields new text; SSE events carry all of it
            text += chunk["text"]
            self._event({**chunk, "text": text})
        self._event("[DONE]")

    def _sampling(self, body: Dict[str, Any], default_max: Optional[int]) -> Dict[str, Any]:
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max))
        params = {"max_new_tokens": 128 if max_tokens is None else max_tokens, "stop": body.get("stop"),
                  "temperature": body.get("temperature", 1.0), "min_new_tokens": body.get("min_tokens", 0)}
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            params["json_schema"] = json.dumps(fmt["json_schema"]["schema"])
        return params

    def _chat(self, body: Dict[str, Any]) -> None:
        prompt = self.state.render_chat(body["messages"])
        self._openai_reply(body, prompt, self._sampling(body, None), chat=True)

    def _completions(self, body: Dict[str, Any]) -> None:
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise ValueError("the fake server accepts text prompts only")
        self._openai_reply(body, prompt, self._sampling(body, 16), chat=False)

    def _openai_reply(self, body: Dict[str, Any], prompt: str, params: Dict[str, Any], chat: bool) -> None:
        engine = self.state.engine
        if not body.get("stream"):
            result = engine.generate(prompt=prompt, sampling_params=params)
            return self._send_json(200, _openai_body(result, chat, body.get("model", "")))
        self._start_sse()
        for chunk in engine.generate(prompt=prompt, sampling_params=params, stream=True):
            finish = _finish(chunk["meta_info"]["finish_reason"])
            self._event(_openai_chunk(chunk["text"], finish, chat, body.get("model", "")))
        usage = _usage(chunk["meta_info"])
        self._event({"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": int(time.time()), "model": body.get("model", ""), "choices": [], "usage": usage})
        self._event("[DONE]")


def _finish(reason: Optional[Dict[str, Any]]) -> Optional[str]:
    if reason is None:
        return None
    return "length" if reason["type"] == "length" else "stop"


def _usage(meta: Dict[str, Any]) -> Dict[str, int]:
    return {"prompt_tokens": meta["prompt_tokens"], "completion_tokens": meta["completion_tokens"],
            "total_tokens": meta["prompt_tokens"] + meta["completion_tokens"]}


def _openai_body(result: Dict[str, Any], chat: bool, model: str) -> Dict[str, Any]:
    meta = result["meta_info"]
    finish = _finish(meta["finish_reason"])
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": result["text"]}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": result["text"], "logprobs": None, "finish_reason": finish}
    return {"id": meta["id"], "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice], "usage": _usage(meta)}


def _openai_chunk(delta: str, finish: Optional[str], chat: bool, model: str) -> Dict[str, Any]:
    if chat:
        choice = {"index": 0, "delta": {"content": delta}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
    return {"id": uuid.uuid4().hex, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def serve(engine: FakeEngine, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Tuple[ThreadingHTTPServer, FakeServer]:
    """Start the server on a daemon thread; returns (http server, state). Port 0 picks a free one."""
    state = FakeServer(engine, **options)
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, state


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--crash", action="store_true", help="exit with an error during startup")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    args, _unknown = parser.parse_known_args(argv)  # real server flags are accepted and ignored
    if args.crash:
        print("fake server: simulated startup failure (weights not found)", flush=True)
        sys.exit(3)
    time.sleep(args.startup_delay)
    httpd, _ = serve(FakeEngine(), args.host, args.port, api_key=args.api_key)
    print(f"fake server listening on {args.host}:{args.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
