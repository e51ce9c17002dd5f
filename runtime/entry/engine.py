"""sgl.Engine: the runtime in-process, without HTTP.

The scheduler and detokenizer run as child processes exactly as under the server; the
TokenizerManager runs on a private asyncio loop in a background thread, so `generate` is safe to
call from any thread (the language's `run_batch` calls it from a thread pool) and `async_generate`
from any event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Union

from sgl.runtime.tokenizer.generate_input import GenerateReqInput, prompt_input
from sgl.runtime.server_args import ServerArgs

_END = object()


class Engine:
    def __init__(self, server_args: Optional[ServerArgs] = None, **kwargs: Any):
        from sgl.runtime.entry.runtime_core import RuntimeCore

        if server_args is None:
            kwargs.setdefault("log_level", "error")
            server_args = ServerArgs(**kwargs)
        elif kwargs:
            raise ValueError("pass either server_args or keyword arguments, not both")
        self.server_args = server_args
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sgl-engine-loop", daemon=True)
        self._thread.start()
        self.core = RuntimeCore(server_args)
        try:
            self._call(self.core.start_async())
        except BaseException:
            self.core.shutdown()
            raise
        self.tokenizer_manager = self.core.tokenizer_manager
        self.tokenizer = self.core.tokenizer
        self._closed = False
        atexit.register(self.shutdown)

    # ---- generation -----------------------------------------------------------------------
    def generate(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        sampling_params: Optional[Union[Dict, List[Dict]]] = None,
        input_ids: Optional[Union[List[int], List[List[int]]]] = None,
        image_data: Optional[Any] = None,
        return_logprob: Optional[Union[bool, List[bool]]] = False,
        logprob_start_len: Optional[Union[int, List[int]]] = None,
        top_logprobs_num: Optional[Union[int, List[int]]] = None,
        lora_path: Optional[Any] = None,
        custom_logit_processor: Optional[Any] = None,
        stream: bool = False,
        rid: Optional[Union[str, List[str]]] = None,
        return_text_in_logprobs: bool = False,
    ) -> Union[Dict, List[Dict], Iterator[Dict]]:
        """SGLang's Engine.generate: a dict, a list of dicts (batch), or an iterator of chunks whose
        "text" is the new text since the previous chunk (stream=True)."""
        obj = self._make_input(locals())
        if stream:
            return self._sync_stream(obj)
        return self._call(self._collect(obj))

    async def async_generate(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        sampling_params: Optional[Union[Dict, List[Dict]]] = None,
        input_ids: Optional[Union[List[int], List[List[int]]]] = None,
        image_data: Optional[Any] = None,
        return_logprob: Optional[Union[bool, List[bool]]] = False,
        logprob_start_len: Optional[Union[int, List[int]]] = None,
        top_logprobs_num: Optional[Union[int, List[int]]] = None,
        lora_path: Optional[Any] = None,
        custom_logit_processor: Optional[Any] = None,
        stream: bool = False,
        rid: Optional[Union[str, List[str]]] = None,
        return_text_in_logprobs: bool = False,
    ) -> Union[Dict, List[Dict], AsyncIterator[Dict]]:
        obj = self._make_input(locals())
        if stream:
            return self._async_stream(obj)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._collect(obj), self._loop))

    @staticmethod
    def _make_input(args: Dict[str, Any]) -> GenerateReqInput:
        if args["lora_path"] is not None:
            raise ValueError("lora_path: LoRA adapters are not supported")
        if args["custom_logit_processor"] is not None:
            raise ValueError("custom_logit_processor is not supported")
        return GenerateReqInput(
            text=args["prompt"], input_ids=args["input_ids"], image_data=args["image_data"],
            sampling_params=args["sampling_params"], rid=args["rid"], return_logprob=args["return_logprob"],
            logprob_start_len=args["logprob_start_len"], top_logprobs_num=args["top_logprobs_num"],
            return_text_in_logprobs=args["return_text_in_logprobs"], stream=args["stream"],
        )

    async def _collect(self, obj: GenerateReqInput):
        async for out in self.tokenizer_manager.generate_request(obj):
            return out

    def _sync_stream(self, obj: GenerateReqInput) -> Iterator[Dict]:
        agen = self.tokenizer_manager.generate_request(obj)
        offsets: Dict[int, int] = {}
        try:
            while True:
                out = self._call(_next_or_end(agen))
                if out is _END:
                    return
                yield _delta(out, offsets)
        finally:
            self._call(agen.aclose())

    async def _async_stream(self, obj: GenerateReqInput) -> AsyncIterator[Dict]:
        agen = self.tokenizer_manager.generate_request(obj)
        offsets: Dict[int, int] = {}
        try:
            while True:
                fut = asyncio.run_coroutine_threadsafe(_next_or_end(agen), self._loop)
                out = await asyncio.wrap_future(fut)
                if out is _END:
                    return
                yield _delta(out, offsets)
        finally:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(agen.aclose(), self._loop))

    # ---- control --------------------------------------------------------------------------
    def flush_cache(self) -> bool:
        return self._call(self.tokenizer_manager.flush_cache())

    def get_server_info(self) -> Dict[str, Any]:
        state = self._call(self.tokenizer_manager.get_internal_state())
        return {**self.server_args.to_dict(), **state, "version": _version()}

    def encode(self, prompt: Union[str, List[str], List[int], List[List[int]]],
               rid: Optional[Union[str, List[str]]] = None) -> Union[Dict, List[Dict]]:
        """SGLang's Engine.encode: {"embedding": [...], "meta_info": {...}} for one prompt, a list
        for a batch. Token ids are accepted too (a list of ints, or a list of lists). A model not
        served as an embedding / reward model raises SGLang's ValueError."""
        return self._call(self.tokenizer_manager.encode_request(prompt_input(prompt, rid)))

    def shutdown(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._call(self.core.close_async(), timeout=5)
        except Exception:
            pass
        self.core.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _call(self, coro, timeout: Optional[float] = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)


async def _next_or_end(agen):
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return _END


def _delta(out: Dict, offsets: Dict[int, int]) -> Dict:
    """Engine streams carry the new text only (SGLang's Engine does the same)."""
    out = dict(out)
    if "text" in out:
        key = out.get("index", 0)
        start = offsets.get(key, 0)
        offsets[key] = len(out["text"])
        out["text"] = out["text"][start:]
    return out


def _version() -> str:
    import sgl

    return sgl.__version__
