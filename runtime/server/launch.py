"""`python -m sgl.launch_server`: start the runtime, serve HTTP, warm up, and shut down cleanly.

Exit codes: 0 after SIGINT/SIGTERM, 1 when the runtime dies or fails to start or warm up,
2 for bad flags. The scheduler and detokenizer never outlive this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import List, Optional

from sgl.runtime.server_args import ServerArgs, prepare_server_args

logger = logging.getLogger("sgl.server")

READY_MESSAGE = "The server is fired up and ready to roll!"
WARMUP_PROMPT = "The capital city of France is"
_WARMUP_TIMEOUT_S = 300
_WATCH_INTERVAL_S = 0.2
# In-flight requests have already failed when the runtime dies; don't wait long for them.
_GRACEFUL_SHUTDOWN_S = 3


def main(argv: Optional[List[str]] = None) -> int:
    try:
        server_args = prepare_server_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if server_args.node_rank > 0:
        from sgl.runtime.entry.worker_node import run_worker_node

        return run_worker_node(server_args)  # a node of a multi-node TP group without HTTP
    return launch_server(server_args)


def launch_server(server_args: ServerArgs) -> int:
    from sgl.utils import kill_process_tree

    signals = _StartupSignals()
    signals.install()
    core = None
    try:
        from sgl.runtime.entry.runtime_core import RuntimeCore

        core = RuntimeCore(server_args)
        return asyncio.run(_serve(server_args, core, signals))
    except (ValueError, RuntimeError, TimeoutError, OSError) as e:
        logger.error("The server failed: %s", e)
        return 1
    finally:
        if core is not None:
            core.shutdown()
        kill_process_tree(include_parent=False)  # nothing this process started may outlive it


async def _serve(server_args: ServerArgs, core, signals: "_StartupSignals") -> int:
    import uvicorn

    from sgl.runtime.server.http_server import create_app, make_state

    state = make_state(server_args, core, core.tokenizer)
    app = create_app(state)
    await core.start_async()
    if state.metrics is not None:
        core.tokenizer_manager.metrics = state.metrics
    config = uvicorn.Config(app, host=server_args.host, port=server_args.port,
                            log_level=(server_args.log_level_http or server_args.log_level).lower(),
                            timeout_keep_alive=5, timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S)
    server = uvicorn.Server(config)
    outcome = _Outcome()
    tasks = [asyncio.create_task(_watch_runtime(state, server, outcome)),
             asyncio.create_task(_warm_up(server_args, server, outcome, core.model_config.is_generation))]
    signals.serving = True  # uvicorn handles SIGINT/SIGTERM from here on
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await core.close_async()
    return outcome.code


class _Outcome:
    code = 0

    def fail(self, server, message: str) -> None:
        logger.error(message)
        self.code = 1
        server.should_exit = True


async def _watch_runtime(state, server, outcome: _Outcome) -> None:
    """Stop serving (exit code 1) when the scheduler or detokenizer dies."""
    while True:
        await asyncio.sleep(_WATCH_INTERVAL_S)
        reason = state.tm.dead_reason
        if reason is None:
            continue
        if not server.should_exit:  # a child dying during a requested shutdown is expected
            outcome.fail(server, f"The runtime died ({reason}); shutting down the server.")
        return


async def _warm_up(server_args: ServerArgs, server, outcome: _Outcome, is_generation: bool = True) -> None:
    """One real request through HTTP before announcing readiness (SGLang's start-up check)."""
    while not server.started:
        await asyncio.sleep(0.05)
    if not server_args.skip_server_warmup:
        try:
            for _ in range(server_args.dp_size):  # one for each data-parallel replica (round robin)
                await _send_warmup(server_args, is_generation)
        except Exception as e:  # any failure means the server cannot serve
            outcome.fail(server, f"The warm-up request failed: {type(e).__name__}: {e}")
            return
    logger.info(READY_MESSAGE)


async def _send_warmup(server_args: ServerArgs, is_generation: bool = True) -> None:
    import aiohttp

    host = server_args.host if server_args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    # an embedding / reward model is warmed up through /encode (SGLang's choice too)
    route, payload = ("/generate", {"sampling_params": {"temperature": 0, "max_new_tokens": 8}}) if is_generation \
        else ("/encode", {})
    url = f"http://{host}:{server_args.port}{route}"
    headers = {"Authorization": f"Bearer {server_args.api_key}"} if server_args.api_key else {}
    if server_args.skip_tokenizer_init:
        payload["input_ids"] = [10, 11, 12]
    else:
        payload["text"] = WARMUP_PROMPT
    timeout = aiohttp.ClientTimeout(total=_WARMUP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
            await response.read()


class _StartupSignals:
    """SIGINT/SIGTERM before uvicorn runs: kill the children and leave at once (nothing else to
    clean up). While and after uvicorn serves, it handles them and shuts down gracefully; the
    signal it re-raises afterwards lands here and is ignored."""

    serving = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.serving:
            return
        from sgl.utils import kill_process_tree

        logger.info("Received signal %d during start-up; exiting.", signum)
        kill_process_tree(include_parent=False, grace_s=_GRACEFUL_SHUTDOWN_S)
        os._exit(0)
