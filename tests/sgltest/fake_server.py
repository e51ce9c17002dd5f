"""The real HTTP app (`create_app` of runtime/server) serving a FakeEngine.

Only the runtime behind the app is fake: `FakeCore` has the attributes of `RuntimeCore` that the
routes read (tokenizer, model config, tokenizer manager), and its `FakeTokenizerManager` answers
`generate_request` from a FakeEngine. Routes, request validation, error bodies, auth, SSE framing
and the OpenAI adapters are the server's own, so the fake cannot drift from the real routes.

`FakeServer(engine)` runs it in this process on a free port and records every POST body (for tests
that check what the frontend sends). As a module (`python -m sgltest.fake_server --port N
[--api-key K] [--crash] [--startup-delay S]`, with tests/ on PYTHONPATH) it plays
`python -m sgl.launch_server` for the Runtime tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from sgltest.fake_engine import FakeEngine

# The fake tokenizer gives ids to new words as it meets them; any bound above those will do.
FAKE_VOCAB_SIZE = 1 << 20
FAKE_CONTEXT_LEN = 4096


class FakeTokenizerManager:
    """What the routes call on the runtime's TokenizerManager, answered by a FakeEngine.

    Like the real one, it checks the sampling params, yields one result (a dict, or a list for a
    batch) or, for a stream, one update per step whose "text" is everything generated so far.
    """

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.dead_reason: Optional[str] = None
        self.aborted: List[str] = []  # rids the server asked to abort (the fake finishes them anyway)

    async def generate_request(self, obj: Any, is_disconnected: Any = None) -> AsyncIterator[Any]:
        items = obj.split()
        for item in items:
            _check_sampling_params(item.sampling_params)
        single = obj.is_single()
        if not obj.stream:
            # One thread per prompt: FakeEngine.generate blocks (and may sleep to simulate work).
            results = await asyncio.gather(*(asyncio.to_thread(self._generate, item) for item in items))
            yield results[0] if single else list(results)
            return
        for item in items:
            async for out in self._stream(item):
                if not single:
                    out["index"] = item.index
                yield out

    def _generate(self, item: Any) -> Dict[str, Any]:
        out = self.engine.generate(**_engine_kwargs(item))
        out["meta_info"]["id"] = item.rid
        return out

    async def _stream(self, item: Any) -> AsyncIterator[Dict[str, Any]]:
        chunks = self.engine.generate(stream=True, **_engine_kwargs(item))
        text = ""
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            text += chunk["text"]  # the engine streams new text; the manager reports all of it
            chunk["meta_info"]["id"] = item.rid
            yield {**chunk, "text": text}

    async def flush_cache(self) -> bool:
        self.engine.flush_cache()
        return True

    async def get_internal_state(self) -> Dict[str, Any]:
        return {"max_in_flight": self.engine.max_in_flight}

    def abort_request(self, rid: str) -> None:
        self.aborted.append(rid)


def _check_sampling_params(params: Dict[str, Any]) -> None:
    """The runtime's own checks (a ValueError is a 400); `n` is the one thing the fake lacks."""
    from sgl.runtime.sampling.params import SamplingParams

    checked = SamplingParams.from_dict(params)
    checked.normalize()
    checked.verify(FAKE_VOCAB_SIZE)
    if checked.n != 1:
        raise ValueError(f"n: the fake engine samples one completion per prompt, got n={checked.n}")


def _engine_kwargs(item: Any) -> Dict[str, Any]:
    return {"prompt": item.text, "input_ids": item.input_ids, "sampling_params": item.sampling_params,
            "return_logprob": item.return_logprob, "logprob_start_len": item.logprob_start_len,
            "top_logprobs_num": item.top_logprobs_num, "return_text_in_logprobs": item.return_text_in_logprobs}


class FakeCore:
    """The attributes of RuntimeCore that the app reads."""

    def __init__(self, engine: FakeEngine) -> None:
        self.tokenizer = engine.tokenizer
        self.model_config = SimpleNamespace(context_len=FAKE_CONTEXT_LEN, vocab_size=FAKE_VOCAB_SIZE, is_generation=True)
        self.tokenizer_manager = FakeTokenizerManager(engine)


def build_app(engine: FakeEngine, api_key: Optional[str] = None) -> Any:
    """The server's FastAPI app, built as `launch_server` builds it, over `engine`."""
    from sgl.runtime.server.http_server import create_app, make_state
    from sgl.runtime.server_args import ServerArgs

    args = ServerArgs(model_path=engine.model_path, tokenizer_path=engine.model_path, api_key=api_key)
    core = FakeCore(engine)
    return create_app(make_state(args, core, core.tokenizer))


class _RecordPosts:
    """ASGI middleware: keeps (path, JSON body) of every POST, then passes the request on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: List[Tuple[str, Any]] = []

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.requests.append((scope["path"], _json_or_text(body)))
        replayed = False

        async def replay() -> Dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows the body (e.g. a disconnect)
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return body.decode("utf-8", "replace")


class FakeServer:
    """The app over `engine`, serving on a free port on a thread of this process until
    `shutdown()` (or the end of a `with` block): `url`, `engine`, `requests` [(path, body) of
    every POST]."""

    def __init__(self, engine: FakeEngine, api_key: Optional[str] = None, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.engine = engine
        self._recorder = _RecordPosts(build_app(engine, api_key))
        sock = socket.socket()
        sock.bind((host, 0))
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(self._recorder, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        self._wait_started(sock)

    @property
    def requests(self) -> List[Tuple[str, Any]]:
        return self._recorder.requests

    def _wait_started(self, sock: socket.socket, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def main(argv: Optional[list] = None) -> None:
    import uvicorn

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
    app = build_app(FakeEngine(), api_key=args.api_key)
    print(f"fake server listening on {args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
