"""TokenizerManager: the asyncio front of the runtime (lives in the HTTP / Engine process).

It validates and tokenizes requests, sends them to the scheduler, and turns the detokenizer's
cumulative text back into SGLang's result dicts, per request id. It also watches the scheduler and
detokenizer processes: if one dies, every waiting request fails with that cause.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional

import zmq
import zmq.asyncio

from sgl.runtime.tokenizer.dispatcher import SchedulerDispatcher, merge_states
from sgl.runtime.tokenizer.generate_input import GenerateReqInput, SingleReq, _new_rid
from sgl.runtime.ipc.messages import (
    AbortReq,
    BatchStrOut,
    FlushCacheReq,
    FlushCacheResp,
    GetInternalStateReq,
    GetInternalStateResp,
    StrOutput,
    TokenizedEmbeddingReqInput,
    TokenizedGenerateReqInput,
)
from sgl.runtime.models.model_config import NOT_EMBEDDING_MODEL, NOT_GENERATION_MODEL
from sgl.runtime.sampling.params import SamplingParams, choice_seed

logger = logging.getLogger(__name__)


class RuntimeDeadError(RuntimeError):
    pass


@dataclass
class ReqState:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    latest: Optional[StrOutput] = None
    finished: bool = False
    error: Optional[str] = None
    created: float = field(default_factory=time.perf_counter)
    first_token_time: Optional[float] = None


class TokenizerManager:
    def __init__(self, server_args, port_args, model_config, tokenizer, scheduler_info: dict, procs=()):
        self.server_args = server_args
        self.model_config = model_config
        self.tokenizer = tokenizer
        # The scheduler's limits, reported when it is ready; both follow from min(context length,
        # KV pool). A prompt must be shorter than max_req_input_len, and the scheduler caps
        # max_new_tokens at max_req_len - 1 - prompt: an explicit max_new_tokens beyond that cap is
        # an error here rather than a silent cut, while None ("up to the limit") is resolved there.
        self.max_prompt_len = scheduler_info["max_req_input_len"] - 1
        self.max_prompt_plus_new_tokens = scheduler_info["max_req_len"] - 1
        self.scheduler_info = scheduler_info
        self.procs = list(procs)
        self.ctx = zmq.asyncio.Context(2)
        self.recv_from_detokenizer = self.ctx.socket(zmq.PULL)
        self.recv_from_detokenizer.bind(port_args.tokenizer_ipc_name)
        # the scheduler, or one of --dp-size replicas per request
        self.dispatcher = SchedulerDispatcher(self.ctx, port_args.scheduler_input_ipc_names,
                                              getattr(server_args, "load_balance_method", "round_robin"))
        self.rid_to_state: Dict[str, ReqState] = {}
        self._control_waiters: Dict[type, List[asyncio.Future]] = {}
        self.dead_reason: Optional[str] = None
        self._tasks: List[asyncio.Task] = []
        self.metrics = None

    def start(self) -> None:
        """Start the receive loop and the process watchdog on the running event loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._handle_loop()), loop.create_task(self._watch_processes())]

    # ---- public API ---------------------------------------------------------------------
    async def generate_request(self, obj: GenerateReqInput, is_disconnected=None) -> AsyncIterator[Any]:
        """Yield results: for a stream, one dict per update (with "index" in a batch); otherwise one
        final dict (single request) or list (batch)."""
        self._check_alive()
        if not self.model_config.is_generation:
            raise ValueError(NOT_GENERATION_MODEL)
        items = obj.split()
        prepared = [self._prepare(item) for item in items]
        single = obj.is_single()
        n = prepared[0][1].n
        if any(p[1].n != n for p in prepared):
            raise ValueError("sampling_params: every prompt of a batch must use the same n")
        if n > 1:
            prepared = await self._expand_parallel_samples(prepared, n)
            single = False
        if obj.stream:
            async for out in self._stream(prepared, single, is_disconnected):
                yield out
        else:
            yield await self._wait_all(prepared, single, is_disconnected)

    async def encode_request(self, obj: GenerateReqInput, is_disconnected=None) -> Any:
        """Embeddings (or reward scores) of the prompts of `obj` (text or input_ids, rid; nothing
        else applies): one {"embedding", "meta_info"} dict, or a list for a batch."""
        self._check_alive()
        if self.model_config.is_generation:
            raise ValueError(NOT_EMBEDDING_MODEL)
        obj.sampling_params = {"max_new_tokens": 0}  # a prefill: the prompt limit is the only one
        prepared = [self._prepare(item) for item in obj.split()]
        return await self._wait_all(prepared, obj.is_single(), is_disconnected)

    async def flush_cache(self) -> bool:
        return all(resp.success for resp in await self._control(FlushCacheReq(), FlushCacheResp))

    async def get_internal_state(self) -> dict:
        return merge_states([resp.state for resp in await self._control(GetInternalStateReq(), GetInternalStateResp)])

    def abort_request(self, rid: str) -> None:
        if rid in self.rid_to_state:
            self.dispatcher.send_to_owner(rid, AbortReq(rid))

    # ---- preparation --------------------------------------------------------------------
    def _prepare(self, item: SingleReq):
        params = SamplingParams.from_dict(item.sampling_params)
        params.normalize(self.tokenizer)
        params.verify(self.model_config.vocab_size)
        ids = item.input_ids
        if ids is None:
            if self.tokenizer is None:
                raise ValueError("text input needs a tokenizer; this server runs with --skip-tokenizer-init")
            ids = self.tokenizer.encode(item.text)
        self._validate_length(ids, params, "input_ids" if item.input_ids is not None else "text")
        return item, params, ids

    def _validate_length(self, ids: List[int], params: SamplingParams, param: str) -> None:
        """Each error quotes the one limit it broke, by name; `param` is the prompt field."""
        n = len(ids)
        if n == 0:
            raise ValueError(f"{param}: the input is empty; text / input_ids must contain at least one token")
        if n > self.max_prompt_len:
            raise ValueError(
                f"{param}: the prompt has {n} tokens, more than the prompt limit of this server "
                f"({self.max_prompt_len} tokens). Shorten the prompt."
            )
        if params.max_new_tokens is not None and n + params.max_new_tokens > self.max_prompt_plus_new_tokens:
            raise ValueError(
                f"max_new_tokens: the prompt ({n} tokens) plus max_new_tokens ({params.max_new_tokens}) is "
                f"{n + params.max_new_tokens} tokens, more than the limit on prompt + max_new_tokens of this "
                f"server ({self.max_prompt_plus_new_tokens} tokens). Reduce the prompt or max_new_tokens, or set "
                "max_new_tokens to null to generate up to the limit."
            )

    async def _expand_parallel_samples(self, prepared, n: int):
        """Cache each distinct prompt first (max_new_tokens=0), then send n copies of it. Under a
        `seed`, copy j samples with `choice_seed(seed, j)`: reproducible, and the n choices differ."""
        warm = []
        for item, params, ids in prepared:
            p0 = copy.copy(params)
            p0.max_new_tokens = 0
            warm.append((SingleReq(_new_rid(), item.text, ids, {}), p0, ids))
        await self._wait_all(warm, single=False, is_disconnected=None)
        out = []
        for item, params, ids in prepared:
            for j in range(n):
                it = copy.copy(item)
                it.rid = _new_rid()
                it.index = len(out)
                out.append((it, _choice_params(params, j), ids))
        return out

    def _send(self, item: SingleReq, params: SamplingParams, ids: List[int]) -> ReqState:
        if item.rid in self.rid_to_state:
            raise ValueError(f"rid {item.rid!r} is already in use")
        state = ReqState()
        self.rid_to_state[item.rid] = state
        if not self.model_config.is_generation:  # a pooling model serves nothing else
            self.dispatcher.send_request(item.rid, TokenizedEmbeddingReqInput(item.rid, item.text, list(ids)))
            return state
        self.dispatcher.send_request(
            item.rid,
            TokenizedGenerateReqInput(
                rid=item.rid, input_text=item.text, input_ids=list(ids), sampling_params=params,
                return_logprob=item.return_logprob, logprob_start_len=item.logprob_start_len,
                top_logprobs_num=item.top_logprobs_num, stream=item.stream,
            )
        )
        return state

    # ---- waiting ------------------------------------------------------------------------
    async def _wait_all(self, prepared, single: bool, is_disconnected):
        states = [(item, self._send(item, params, ids)) for item, params, ids in prepared]
        try:
            results = [await self._wait_one(item, state, is_disconnected) for item, state in states]
        finally:
            self._cleanup(states)
        if single:
            _raise_client_error(results[0])
            return results[0]
        return results

    async def _wait_one(self, item: SingleReq, state: ReqState, is_disconnected) -> dict:
        while not state.finished:
            await self._wait_event(item, state, is_disconnected)
        return self._result(item, state)

    async def _wait_event(self, item: SingleReq, state: ReqState, is_disconnected) -> None:
        try:
            await asyncio.wait_for(state.event.wait(), timeout=4)
        except asyncio.TimeoutError:
            if is_disconnected is not None and await is_disconnected():
                self.abort_request(item.rid)
                raise asyncio.CancelledError("client disconnected")
            return
        state.event.clear()
        if state.error:
            raise RuntimeDeadError(state.error)

    async def _stream(self, prepared, single: bool, is_disconnected):
        states = [(item, self._send(item, params, ids)) for item, params, ids in prepared]
        try:
            pending = {item.rid: (item, state) for item, state in states}
            while pending:
                for rid, (item, state) in list(pending.items()):
                    if state.latest is not None and state.event.is_set():
                        state.event.clear()
                        out = self._result(item, state)
                        if single:
                            _raise_client_error(out)
                        if not single:
                            out["index"] = item.index
                        yield out
                    if state.error:
                        raise RuntimeDeadError(state.error)
                    if state.finished and not state.event.is_set():
                        del pending[rid]
                if pending:
                    await self._wait_any([s for _, s in pending.values()], is_disconnected, pending)
        finally:
            self._cleanup(states)

    async def _wait_any(self, states: List[ReqState], is_disconnected, pending) -> None:
        waiters = [asyncio.ensure_future(s.event.wait()) for s in states]
        try:
            done, _ = await asyncio.wait(waiters, timeout=4, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if not done and is_disconnected is not None and await is_disconnected():
            for rid in pending:
                self.abort_request(rid)
            raise asyncio.CancelledError("client disconnected")

    def _cleanup(self, states) -> None:
        for item, state in states:
            if not state.finished and item.rid in self.rid_to_state and self.dead_reason is None:
                self.abort_request(item.rid)  # the caller went away (disconnect / cancel)
            self.rid_to_state.pop(item.rid, None)

    # ---- results ------------------------------------------------------------------------
    def _result(self, item: SingleReq, state: ReqState) -> dict:
        out = state.latest
        if out.embedding is not None:
            meta = {"id": item.rid, "finish_reason": out.finished_reason, "prompt_tokens": out.meta["prompt_tokens"]}
            return {"embedding": out.embedding, "meta_info": meta}
        meta = {"id": item.rid, **out.meta, "finish_reason": out.finished_reason}
        if item.return_logprob:
            self._add_logprobs(meta, out, item)
        if self.tokenizer is None:
            return {"token_ids": list(out.output_ids), "meta_info": meta}
        return {"text": out.text, "meta_info": meta}

    def _add_logprobs(self, meta: dict, out: StrOutput, item: SingleReq) -> None:
        with_text = item.return_text_in_logprobs
        meta["input_token_logprobs"] = self._fmt(out.input_token_logprobs or [], with_text)
        meta["output_token_logprobs"] = self._fmt(out.output_token_logprobs or [], with_text)
        if item.top_logprobs_num > 0:
            meta["input_top_logprobs"] = [self._fmt(t, with_text) if t is not None else None for t in out.input_top_logprobs or []]
            meta["output_top_logprobs"] = [self._fmt(t, with_text) for t in out.output_top_logprobs or []]

    def _fmt(self, pairs, with_text: bool) -> list:
        if not with_text or self.tokenizer is None:
            return [[lp, tid, None] for lp, tid in pairs]
        texts = self.tokenizer.batch_decode([[tid] for _, tid in pairs]) if pairs else []
        return [[lp, tid, t] for (lp, tid), t in zip(pairs, texts)]

    # ---- background loops ---------------------------------------------------------------
    async def _handle_loop(self) -> None:
        while True:
            msg = await self.recv_from_detokenizer.recv_pyobj()
            if isinstance(msg, BatchStrOut):
                for out in msg.outputs:
                    self._on_output(out)
            else:
                self._on_control(msg)

    def _on_output(self, out: StrOutput) -> None:
        state = self.rid_to_state.get(out.rid)
        if state is None:
            return
        state.latest = out
        if state.first_token_time is None and out.output_ids:
            state.first_token_time = time.perf_counter()
        state.finished = out.finished_reason is not None
        if state.finished:
            self.dispatcher.finished(out.rid)
        state.event.set()
        if self.metrics is not None:
            self.metrics.observe(state, out)

    def _on_control(self, msg) -> None:
        waiters = self._control_waiters.get(type(msg), [])
        if waiters:
            waiters.pop(0).set_result(msg)

    async def _control(self, req, resp_type) -> list:
        """Every replica's response to a control message."""
        self._check_alive()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(self.dispatcher.size)]
        self._control_waiters.setdefault(resp_type, []).extend(futures)
        self.dispatcher.send_all(req)
        return await asyncio.wait_for(asyncio.gather(*futures), timeout=60)

    async def _watch_processes(self) -> None:
        while self.dead_reason is None:
            await asyncio.sleep(0.5)
            # every dead one: when a tensor-parallel rank dies the others follow, and the first to
            # go is the cause
            dead = [f"{proc.name} process died (exit code {proc.exitcode})" for proc in self.procs if not proc.is_alive()]
            if dead:
                self._on_death("; ".join(dead))

    def _on_death(self, reason: str) -> None:
        logger.error("Runtime failure: %s", reason)
        self.dead_reason = reason
        for state in self.rid_to_state.values():
            state.error = reason
            state.event.set()
        for waiters in self._control_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(RuntimeDeadError(reason))

    def _check_alive(self) -> None:
        if self.dead_reason is not None:
            raise RuntimeDeadError(self.dead_reason)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.recv_from_detokenizer.close(linger=0)
        self.dispatcher.close()
        self.ctx.term()


def _raise_client_error(result: dict) -> None:
    """A request the scheduler refused as invalid (status 400) becomes a ValueError for the caller;
    in a batch the other requests' results are returned as they are."""
    reason = result["meta_info"].get("finish_reason") or {}
    if reason.get("type") == "abort" and reason.get("status_code") == 400:
        raise ValueError(reason.get("message", "invalid request"))


def _choice_params(params: SamplingParams, index: int) -> SamplingParams:
    if params.seed is None or index == 0:
        return params
    seeded = copy.copy(params)
    seeded.seed = choice_seed(params.seed, index)
    return seeded
