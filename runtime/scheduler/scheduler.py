"""The scheduler: continuous batching over one model runner.

Each `step()` admits a prefill (extend) batch when one fits, otherwise runs one decode step for the
running batch; then it samples, appends tokens, finishes requests (caching their KV in the prefix
cache) and returns per-request deltas. The transport is injected: `event_loop(recv, send)` is
used by the scheduler process, while tests and benchmarks call `handle()` and `step()` directly.

A step is split in two: *launch* (build the batch, enqueue the forward and the sampling) and
*process* (read the sampled tokens, append them, finish requests, emit outputs). The overlap
scheduler (on unless `--disable-overlap-schedule`) launches batch k+1 before it processes batch
k, so the host's work of a step runs while the device computes the previous one. The next
decode batch takes its input ids from a device-side future map (`future_ids`) where the
previous step's sampled tokens were written. Consequences, all invisible in the results:
a request that finishes at step k has already been launched in step k+1, whose token for it is
dropped (its KV slot is freed with the rest of the request); newly prefilled requests join the
decode batch once their first token is read. Steps fall back to launch-then-process only when
decode could run out of KV slots (retraction needs every token on the host).

Constrained requests keep the overlap: a decode batch holding one is launched with its sampling
deferred (`Launched.sample` is None). While the device runs forward k+1, the host reads batch k's
tokens, appends those of the constrained requests (their grammars accept them), fills k+1's vocab
masks and enqueues its sampling, and only then processes the rest of batch k (outputs,
finishes, jump-forward), so the device is not left waiting on that work. A request that
finishes at batch k or is jumped forward after it has moved on (`Req.epoch`), so the token batch
k+1 sampled for it is dropped.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from sgl.runtime.sampling.finish_reason import FinishAbort
from sgl.runtime.mem.prefix_cache import PrefixCache, create_prefix_cache
from sgl.runtime.ipc.messages import (
    AbortReq,
    BatchTokenIDOut,
    FlushCacheReq,
    FlushCacheResp,
    GetInternalStateReq,
    GetInternalStateResp,
    ReqOutput,
    TokenizedEmbeddingReqInput,
    TokenizedGenerateReqInput,
)
from sgl.runtime.models.model_config import NOT_EMBEDDING_MODEL, NOT_GENERATION_MODEL
from sgl.runtime.sampling.params import SamplingParams
from sgl.runtime.scheduler.admission import DecodeOutlook, PrefillAdder, outlook_item, reserved_future, runs_to_limit
from sgl.runtime.scheduler.batch import ScheduleBatch
from sgl.runtime.scheduler.grammar import GrammarManager, grammar_key
from sgl.runtime.scheduler.policy import SchedulePolicy
from sgl.runtime.scheduler.req import Req
from sgl.runtime.scheduler.sampling import BatchSampler, SampleResult
from sgl.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

RETRACT_DECODE_STEPS = 20
NON_STREAM_FLUSH_EVERY = 50
PREFIX_SORT_TOKENS = 64
PREFILL_RETRY_STEPS = 16
# rows of prompt logits turned into logprobs at once (bounds the temporary memory)
INPUT_LOGPROB_ROWS = 1024


def _prefix_key(req: Req) -> List[int]:
    return req.origin_input_ids[:PREFIX_SORT_TOKENS]


@dataclass
class Launched:
    """A batch whose forward and sampling are enqueued but whose tokens the host has not read."""

    batch: ScheduleBatch
    logits: object  # LogitsOutput
    sample: Optional[SampleResult]  # None: decode sampling deferred until the grammars are current
    partial: Optional[List[bool]]  # extend: requests with more prompt chunks to come; None = decode
    future_base: int = -1  # decode under overlap: first future-map slot of this batch's tokens
    decode: Optional["Launched"] = None  # mixed chunked prefill: the decode step in the same forward
    epochs: Optional[List[int]] = None  # decode: each request's Req.epoch at launch
    appended: Optional[set] = None  # decode: rows whose token was appended before the rest (grammars)


def _sampling_deferred(launched: Optional[Launched]) -> bool:
    return launched is not None and any(p is not None and p.sample is None for p in (launched, launched.decode))


def _decode_part(launched: Launched) -> Optional[Launched]:
    return launched if launched.partial is None else launched.decode


class Scheduler:
    def __init__(self, server_args: ServerArgs, model_runner=None, tokenizer=None):
        self.server_args = server_args
        if model_runner is None:
            from sgl.runtime.executor.model_runner import ModelRunner

            model_runner = ModelRunner(server_args)
        self.model_runner = model_runner
        self.model_config = model_runner.model_config
        self.tokenizer = tokenizer
        self.device = model_runner.device
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.max_total_num_tokens = model_runner.max_total_num_tokens
        self.max_req_len = min(self.model_config.context_len - 1, self.max_total_num_tokens - 1)
        self.max_req_input_len = self.max_req_len - 5
        self.max_running_requests = min(
            server_args.max_running_requests or self.max_total_num_tokens // 2, self.req_to_token_pool.size - 1
        )
        self._init_cache()
        self.policy = SchedulePolicy(server_args.schedule_policy, self.tree_cache, server_args.random_seed)
        self.eos_token_ids = set(self.model_config.eos_token_ids or ())
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.sampler = BatchSampler(self.model_config.vocab_size, self.device, self.eos_token_ids,
                                    server_args.enable_nan_detection)
        self.grammar = None
        if tokenizer is not None:
            self.grammar = GrammarManager(tokenizer, self.model_config.vocab_size,
                                          server_args.constrained_json_whitespace_pattern,
                                          enable_jump_forward=not server_args.disable_jump_forward,
                                          backend=server_args.grammar_backend,
                                          eos_token_ids=sorted(self.eos_token_ids))
        self.waiting: List[Req] = []
        self.running: List[Req] = []
        self.chunked_req: Optional[Req] = None
        self._pending_outputs: List[ReqOutput] = []  # finished outside a forward (aborts, errors)
        self.init_new_token_ratio = min(0.7 * server_args.schedule_conservativeness, 1.0)
        self.min_new_token_ratio = self.init_new_token_ratio * 0.14
        self.new_token_ratio = self.init_new_token_ratio
        self.new_token_ratio_decay = (self.init_new_token_ratio - self.min_new_token_ratio) / 600
        self.decode_steps = 0
        self.is_generation = self.model_config.is_generation
        # as SGLang: pooling models run one prefill batch at a time, nothing to overlap
        self.enable_overlap = not server_args.disable_overlap_schedule and self.is_generation
        self._inflight: Optional[Launched] = None
        # Set when a prefill round admitted nothing (no memory or request slots); cleared when that
        # can change (a request finishes, is retracted or arrives), so a long queue that cannot run
        # costs no scheduling work per decode step.
        self._prefill_blocked = False
        self.num_overlapped_steps = 0  # steps whose batch was launched before the previous one was processed
        self.num_mixed_steps = 0  # forwards that ran a prefill and a decode step together
        self._last_launch_was_prefill = False
        # Two batches' worth of slots: the in-flight batch's tokens stay readable while the next
        # decode batch writes its own.
        self._future_cap = 2 * (self.max_running_requests + 1)
        self.future_ids = torch.zeros(self._future_cap, dtype=torch.int64, device=self.device)
        self._future_ct = 0
        self.num_retractions = 0
        self.last_gen_time = time.perf_counter()
        self.last_gen_tokens = 0

    def _init_cache(self) -> None:
        self.tree_cache: PrefixCache = create_prefix_cache(self.server_args, self.req_to_token_pool,
                                                           self.token_to_kv_pool)
        chunk = self.server_args.chunked_prefill_size
        self.chunked_prefill_size = None if chunk is None or chunk <= 0 else chunk

    # ---- input --------------------------------------------------------------------------
    def handle(self, msg) -> Optional[object]:
        """Handle one message; return a direct response for control messages, else None."""
        if isinstance(msg, TokenizedGenerateReqInput):
            self._add_request(msg)
        elif isinstance(msg, TokenizedEmbeddingReqInput):
            self._add_embedding_request(msg)
        elif isinstance(msg, AbortReq):
            self.abort(msg.rid, msg.message)
        elif isinstance(msg, FlushCacheReq):
            return FlushCacheResp(self.flush_cache())
        elif isinstance(msg, GetInternalStateReq):
            return GetInternalStateResp(self.internal_state())
        else:
            raise ValueError(f"unknown message type {type(msg).__name__}")
        return None

    def _add_request(self, msg: TokenizedGenerateReqInput) -> None:
        req = Req(
            msg.rid, msg.input_ids, msg.sampling_params, msg.input_text,
            msg.return_logprob, msg.logprob_start_len, msg.top_logprobs_num, msg.stream,
        )
        error = self._validate(req) or (None if self.is_generation else NOT_GENERATION_MODEL)
        if error:
            self._fail(req, error)
            return
        sp = req.sampling_params
        room = self.max_req_len - len(req.origin_input_ids) - 1
        sp.max_new_tokens = room if sp.max_new_tokens is None else min(sp.max_new_tokens, room)
        if grammar_key(sp) is not None:
            if self.grammar is None:
                self._fail(req, "constrained decoding needs a tokenizer (the server runs with --skip-tokenizer-init)")
            else:
                self.grammar.submit(req)
            return
        self.waiting.append(req)
        self._prefill_blocked = False

    def _add_embedding_request(self, msg: TokenizedEmbeddingReqInput) -> None:
        """A prompt to pool: prefilled like a request with max_new_tokens 0 (it finishes with
        SGLang's finish_reason {"type": "length", "length": 0})."""
        req = Req(msg.rid, msg.input_ids, SamplingParams(max_new_tokens=0), msg.input_text)
        error = self._validate(req) or (NOT_EMBEDDING_MODEL if self.is_generation else None)
        if error:
            self._fail(req, error)
            return
        req.pool_all_tokens = self.model_runner.pooler.pooling_type.needs_every_token
        self.waiting.append(req)
        self._prefill_blocked = False

    def _fail(self, req: Req, message: str) -> None:
        """Finish a request that cannot run, as a client error; the others are unaffected."""
        req.finished_reason = FinishAbort(message, status_code=400, err_type="BadRequestError")
        self._pending_outputs.append(self._make_output(req))

    def _poll_grammars(self) -> None:
        if self.grammar is None or not self.grammar.queue:
            return
        ready, failed = self.grammar.poll()
        self.waiting += ready
        self._prefill_blocked &= not ready
        for req, error in failed:
            self._fail(req, error)

    def _validate(self, req: Req) -> Optional[str]:
        n = len(req.origin_input_ids)
        if n == 0:
            return "The input is empty"
        if n >= self.max_req_input_len:
            # the tokenizer manager checks this first, in the same words; requests sent to the
            # scheduler directly (tests, benchmarks) meet this copy
            return (f"input_ids: the prompt has {n} tokens, more than the prompt limit of this server "
                    f"({self.max_req_input_len - 1} tokens). Shorten the prompt.")
        if max(req.origin_input_ids) >= self.model_config.vocab_size or min(req.origin_input_ids) < 0:
            return f"input_ids must be in [0, {self.model_config.vocab_size})"
        if req.top_logprobs_num < 0 or req.top_logprobs_num > self.model_config.vocab_size:
            return f"top_logprobs_num must be in [0, {self.model_config.vocab_size}]"
        if req.logprob_start_len >= n:
            return f"logprob_start_len ({req.logprob_start_len}) must be smaller than the input length ({n})"
        return None

    def abort(self, rid: str, message: str = "Aborted") -> None:
        queued = self.grammar.remove(rid) if self.grammar is not None else None
        if queued is not None:
            queued.finished_reason = FinishAbort(message)
            self._pending_outputs.append(self._make_output(queued))
        for req in list(self.waiting):
            if req.rid == rid:
                self.waiting.remove(req)
                req.finished_reason = FinishAbort(message)
                self._pending_outputs.append(self._make_output(req))
        # Requests being prefilled by the in-flight batch are in no list until it is processed.
        inflight = self._inflight.batch.reqs if self._inflight is not None else []
        for req in self.running + ([self.chunked_req] if self.chunked_req else []) + inflight:
            if req.rid == rid and not req.finished():
                req.to_abort = message

    # ---- the loop -----------------------------------------------------------------------
    def has_work(self) -> bool:
        grammar_wait = self.grammar is not None and bool(self.grammar.queue)
        return bool(self.waiting or self.running or self.chunked_req or self._pending_outputs or grammar_wait
                    or self._inflight is not None)

    def step(self) -> List[ReqOutput]:
        """One scheduling iteration; returns the per-request updates to send."""
        if not self.is_generation:
            return self._step_pooling()
        self._poll_grammars()
        outputs = []
        if self._inflight is not None and not self._can_overlap():
            outputs += self._process(self._inflight)
            self._inflight = None
        launched = self._launch()
        if self._inflight is not None:
            self.num_overlapped_steps += launched is not None
            if _sampling_deferred(launched):
                # The device has only forward k+1 queued: give it k+1's sampling before the host
                # turns to the rest of batch k (outputs, finishes, jump-forward).
                self._append_constrained(self._inflight)
                self._sample_deferred(launched)
            outputs += self._process(self._inflight)
        self._sample_deferred(launched)
        self._inflight = launched
        if launched is not None and not self.enable_overlap:
            outputs += self._process(launched)
            self._inflight = None
        pending, self._pending_outputs = self._pending_outputs, []
        return pending + outputs

    def _drop_finished_inflight(self) -> None:
        """Retire an in-flight decode step whose requests have all finished (the overlap
        scheduler launches one past the last token; its tokens are dropped anyway), so a flush
        right after the last result is not refused as pending work."""
        inflight = self._inflight
        if inflight is None or inflight.partial is not None or self.waiting or self.running or self.chunked_req:
            return
        if all(r.finished() for r in inflight.batch.reqs):
            self._pending_outputs += self._process(inflight)
            self._inflight = None

    def _can_overlap(self) -> bool:
        """Whether the next batch may be launched before the in-flight one is processed."""
        if not self.enable_overlap:
            return False
        free = self.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        return free >= 2 * len(self.running)

    def _launch(self) -> Optional[Launched]:
        # While requests are decoding, a prefill batch is followed by a decode step before the next
        # one: requests arriving close together (or the chunks of a long prompt) then delay the
        # running requests' next token by one prefill each, not by all of them in a row. With
        # --enable-mixed-chunk the decode step rides in the prefill's forward instead.
        mix = self.server_args.enable_mixed_chunk and bool(self.running)
        batch = None
        if not (self._last_launch_was_prefill and self.running):
            batch = self._get_new_prefill_batch(len(self.running) if mix else 0)
        if batch is not None and mix and self._decode_fits_now():
            self._last_launch_was_prefill = False  # the running requests decoded in it
            return self._launch_mixed(batch)
        self._last_launch_was_prefill = batch is not None
        if batch is not None:
            return self._launch_extend(batch)
        if self.running:
            return self._launch_decode()
        return None

    def _process(self, launched: Launched) -> List[ReqOutput]:
        if launched.partial is None:
            return self._process_decode(launched)
        outputs = self._process_decode(launched.decode) if launched.decode is not None else []
        return outputs + self._process_extend(launched)

    def event_loop(self, recv: Callable[[], list], send: Callable[[object], None], idle_wait: Callable[[], None],
                   watchdog=None) -> None:
        """Serve until the process ends; `watchdog` (scheduler/watchdog.py) times every step."""
        while True:
            for msg in recv():
                resp = self.handle(msg)
                if resp is not None:
                    send(resp)
            if not self.has_work():
                idle_wait()
                continue
            with watchdog.step() if watchdog is not None else nullcontext():
                outputs = self.step()
            if outputs:
                send(BatchTokenIDOut(outputs))

    # ---- prefill ------------------------------------------------------------------------
    def _get_new_prefill_batch(self, num_decode: int = 0) -> Optional[ScheduleBatch]:
        """The next prefill batch, or None; `num_decode` running requests will share its forward."""
        if not self.waiting and self.chunked_req is None:
            return None
        if self._prefill_blocked and self.chunked_req is None:
            return None
        num_running = len(self.running) + len(self._inflight_prefilled())
        if num_running >= self.max_running_requests and self.chunked_req is None:
            return None
        deferred = self.policy.calc_priority(self.waiting)
        adder = PrefillAdder(self, *self._decode_reservation())
        adder.share_with_decode(num_decode)
        if self.chunked_req is not None:
            if not adder.add_chunked_req(self.chunked_req):
                return None  # wait for decodes to free memory
            self.chunked_req = None
        for req in list(self.waiting):
            if num_running + len(adder.can_run) >= self.max_running_requests:
                break
            if self.server_args.prefill_only_one_req and adder.can_run:
                break
            if req.rid in deferred and adder.can_run:
                continue  # shares a prefix with a request of this batch: next round it hits the cache
            if not adder.add_one_req(req):
                break
        if not adder.can_run:
            self._prefill_blocked = self.chunked_req is None
            return None
        for req in adder.can_run:
            if req in self.waiting:
                self.waiting.remove(req)
        batch = ScheduleBatch(adder.can_run, self.req_to_token_pool, self.token_to_kv_pool, self.tree_cache, self.device)
        batch.prepare_for_extend()
        self._log_prefill(batch, adder)
        return batch

    def _inflight_prefilled(self) -> List[Req]:
        """Requests of the in-flight prefill batch that will join the running batch (overlap)."""
        inflight = self._inflight
        if inflight is None or inflight.partial is None:
            return []
        return [r for r, part in zip(inflight.batch.reqs, inflight.partial) if not part and not r.finished()]

    def _decode_reservation(self) -> Tuple[float, DecodeOutlook]:
        """KV slots the running requests are expected to still need (admission.py). A request that
        can stop early is expected to use `new_token_ratio` of what it has left (SGLang's adaptive
        estimate). One that runs to its limit will use all of it (under-reserving for it only buys
        retractions, each recomputing a prefill), then free what it holds: it joins the outlook."""
        estimated = 0
        outlook = []
        for r in self.running + self._inflight_prefilled():
            if runs_to_limit(r):
                outlook.append(outlook_item(r, r.kv_allocated_len - self.tree_cache.shared_len(r.last_node)))
            else:
                estimated += reserved_future(r)
        return estimated * self.new_token_ratio, DecodeOutlook(outlook)

    def _launch_extend(self, batch: ScheduleBatch, logits=None) -> Launched:
        """Sample a prefill batch (forwarded here, or given its part of a mixed forward's logits)."""
        if logits is None:
            logits = self.model_runner.forward(batch)
        partial = [req.is_chunked > 0 for req in batch.reqs]
        sample = self.sampler.sample(batch.reqs, self._masked(batch.reqs, logits.next_token_logits, partial), skip=partial)
        # Neither step needs the sampled token, so both happen at launch (the KV they insert is
        # enqueued before any later batch can read it): a chunk's bookkeeping, so the next chunk can
        # be launched; and the prompt of every prefilled request goes into the prefix cache now, so
        # requests sharing it hit the cache while this one is still decoding.
        for req, part in zip(batch.reqs, partial):
            if part:
                self._finish_chunk_round(req)
            elif not self.tree_cache.disable and not req.to_abort:
                self.tree_cache.cache_unfinished_req(req)
        return Launched(batch, logits, sample, partial)

    def _process_extend(self, launched: Launched) -> List[ReqOutput]:
        batch, sample = launched.batch, launched.sample
        outputs = []
        for i, req in enumerate(batch.reqs):
            if launched.partial[i]:
                continue
            self._record_input_logprobs(req, launched.logits.input_logits[i])
            if req.sampling_params.max_new_tokens > 0 and not req.to_abort:
                self._append_token(req, sample, i)
            outputs += self._after_token(req)
        self.running += [r for r, part in zip(batch.reqs, launched.partial) if not part and not r.finished()]
        if not self.tree_cache.disable:
            # Requests that share a prompt prefix also share its KV slots; side by side in the batch,
            # the decode kernel's neighbouring programs read those slots together, mostly from L2.
            self.running.sort(key=_prefix_key)
        self._jump_forward(rewrites_only=True)  # a structural span opened by the first token
        return outputs

    def _finish_chunk_round(self, req: Req) -> None:
        if req.to_abort:
            req.finished_reason = FinishAbort(req.to_abort)
            self.tree_cache.cache_finished_req(req)
            self._pending_outputs.append(self._make_output(req))
            return
        self.tree_cache.cache_unfinished_req(req)
        self.req_to_token_pool.free(req.req_pool_idx)
        req.req_pool_idx = None
        self.chunked_req = req

    # ---- pooling models -------------------------------------------------------------------
    def _step_pooling(self) -> List[ReqOutput]:
        """One prefill batch of a pooling model: each request's part of the pooling is kept across
        the chunks of its prompt; a request whose last chunk ran gets its embedding and finishes."""
        batch = self._get_new_prefill_batch()
        outputs = []
        if batch is not None:
            pooled = self.model_runner.forward_pooled(batch)
            done = []
            for i, req in enumerate(batch.reqs):
                more = req.pooled is not None and req.pool_all_tokens
                req.pooled = req.pooled + pooled[i] if more else pooled[i]
                if req.is_chunked:
                    self._finish_chunk_round(req)
                else:
                    done.append(req)
            outputs = self._finish_pooled(done)
        pending, self._pending_outputs = self._pending_outputs, []
        return pending + outputs

    def _finish_pooled(self, reqs: List[Req]) -> List[ReqOutput]:
        if not reqs:
            return []
        pooled = torch.stack([r.pooled for r in reqs])
        embeddings = self.model_runner.embedding_head(pooled, [len(r.origin_input_ids) for r in reqs]).tolist()
        outputs = []
        for req, emb in zip(reqs, embeddings):
            req.pooled = None
            req.embedding = None if req.to_abort else emb
            req.check_finished(self.eos_token_ids)
            self.tree_cache.cache_finished_req(req)
            outputs.append(self._make_output(req))
        return outputs

    # ---- mixed chunked prefill -----------------------------------------------------------
    def _decode_fits_now(self) -> bool:
        """Whether the running requests' next tokens have KV slots without retracting any."""
        free = self.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        return free >= len(self.running)

    def _launch_mixed(self, prefill: ScheduleBatch) -> Launched:
        """One forward for a prefill batch and the running batch's decode step (SGLang's
        --enable-mixed-chunk): the decode tokens cost no extra pass over the weights."""
        decode = self._decode_batch()
        logits = self.model_runner.forward(ScheduleBatch.mixed(prefill, decode))
        self.num_mixed_steps += 1
        prefill_logits, decode_logits = logits.split(len(prefill))
        launched = self._launch_extend(prefill, prefill_logits)
        launched.decode = self._launch_decode(decode, decode_logits)
        return launched

    # ---- decode -------------------------------------------------------------------------
    def _decode_batch(self) -> ScheduleBatch:
        batch = ScheduleBatch(list(self.running), self.req_to_token_pool, self.token_to_kv_pool, self.tree_cache,
                              self.device)
        batch.prepare_for_decode(self.future_ids)
        return batch

    def _launch_decode(self, batch: Optional[ScheduleBatch] = None, logits=None) -> Launched:
        """One decode step of the running batch (or, from a mixed forward, sample its given logits)."""
        if batch is None:
            self._ensure_decode_memory()
            batch = self._decode_batch()
        if logits is None:
            logits = self.model_runner.forward(batch)
        launched = Launched(batch, logits, None, None, epochs=[r.epoch for r in batch.reqs])
        # The in-flight batch's tokens are not yet in the grammars: sample after processing it.
        defer = self._inflight is not None and any(r.grammar is not None for r in batch.reqs)
        if not defer:
            self._sample_decode(launched)
        self.decode_steps += 1
        if self.decode_steps % PREFILL_RETRY_STEPS == 0:
            self._prefill_blocked = False  # the shrinking decode reservation may have made room
        self.new_token_ratio = max(self.new_token_ratio - self.new_token_ratio_decay, self.min_new_token_ratio)
        return launched

    def _sample_decode(self, launched: Launched) -> None:
        """Mask and sample a decode step; rows of requests that moved on since launch are left
        unmasked and get no future slot (their tokens are dropped)."""
        reqs = launched.batch.reqs
        # a grammar that ended with the previous token (appended early, before the finish checks)
        # finishes its request when that step is processed: its row is stale too
        stale = [r.finished() or r.epoch != e or (r.grammar is not None and r.grammar.is_terminated())
                 for r, e in zip(reqs, launched.epochs)]
        logits = self._masked(reqs, launched.logits.next_token_logits, stale)
        launched.sample = self.sampler.sample(reqs, logits)
        if self.enable_overlap:
            launched.future_base = self._publish_futures(reqs, launched.sample, stale)

    def _sample_deferred(self, launched: Optional[Launched]) -> None:
        """Sample the decode part of `launched` if its launch deferred it (the grammars are current now)."""
        if launched is None:
            return
        for part in (launched, launched.decode):
            if part is not None and part.sample is None:
                self._sample_decode(part)

    def _publish_futures(self, reqs: List[Req], sample: SampleResult, stale: Sequence[bool]) -> int:
        """Write the step's sampled ids into the future map, so the next decode reads them on the device."""
        bs = len(reqs)
        base = self._future_ct if self._future_ct + bs <= self._future_cap else 0
        self.future_ids[base : base + bs] = sample.out.next_token_ids
        self._future_ct = base + bs
        for i, req in enumerate(reqs):
            if not stale[i]:
                req.future_slot = base + i
        return base

    def _append_constrained(self, launched: Launched) -> None:
        """Append the tokens of `launched`'s constrained requests (their grammars accept them), so
        the next step's masks can be filled before the rest of the batch is processed."""
        part = _decode_part(launched)
        if part is None:
            return
        part.appended = set()
        for i, req in enumerate(part.batch.reqs):
            if req.grammar is not None and not req.finished() and req.epoch == part.epochs[i]:
                self._append_token(req, part.sample, i)
                part.appended.add(i)

    def _process_decode(self, launched: Launched) -> List[ReqOutput]:
        batch, sample = launched.batch, launched.sample
        appended = launched.appended or ()
        outputs = []
        for i, req in enumerate(batch.reqs):
            if req.future_slot == launched.future_base + i:
                req.future_slot = None
            if i not in appended and (req.finished() or req.epoch != launched.epochs[i]):
                continue  # finished (or jumped forward) in the step before: this extra token is dropped
            if i not in appended:
                self._append_token(req, sample, i)
            outputs += self._after_token(req)
        self.running = [r for r in self.running if not r.finished()]
        self._jump_forward()
        self._log_decode(len(batch.reqs))
        return outputs

    def _ensure_decode_memory(self) -> None:
        need = len(self.running)
        if self.token_to_kv_pool.available_size() < need:
            self.tree_cache.evict(need - self.token_to_kv_pool.available_size())
        if self.token_to_kv_pool.available_size() >= need:
            return
        retracted = self._retract()
        old = self.new_token_ratio
        total_max_new = sum(r.sampling_params.max_new_tokens for r in self.running) or 1
        decoded = sum(len(r.output_ids) for r in self.running)
        self.new_token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(self.running)) / total_max_new)
        logger.info("Decode out of memory happened. #retracted_reqs: %d, #new_token_ratio: %.4f -> %.4f",
                    len(retracted), old, self.new_token_ratio)

    def _retract(self) -> List[Req]:
        """Send the requests with the least progress back to the queue until decode fits."""
        order = sorted(self.running, key=lambda r: (len(r.output_ids), -len(r.origin_input_ids)), reverse=True)
        retracted = []
        while len(order) > 1 and not self._decode_fits(len(order)):
            req = order.pop()
            self._release_for_retract(req)
            retracted.append(req)
        self.running = order
        self.waiting = retracted + self.waiting
        self._prefill_blocked = False
        self.num_retractions += len(retracted)
        if self.token_to_kv_pool.available_size() < len(order):
            raise RuntimeError("KV pool too small for a single request; lower --max-running-requests or raise memory")
        return retracted

    def _decode_fits(self, n: int) -> bool:
        free = self.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        if free < n * RETRACT_DECODE_STEPS:
            return False
        self.tree_cache.evict(max(n - self.token_to_kv_pool.available_size(), 0))
        return True

    def _release_for_retract(self, req: Req) -> None:
        slots = self.req_to_token_pool.req_to_token[req.req_pool_idx, : req.kv_allocated_len].to(torch.int64)
        own_from = len(req.prefix_indices) if not self.tree_cache.disable else 0
        self.token_to_kv_pool.free(slots[own_from:])
        self.tree_cache.dec_lock_ref(req.last_node)
        self.req_to_token_pool.free(req.req_pool_idx)
        req.reset_for_retract()

    # ---- results ------------------------------------------------------------------------
    def _masked(self, reqs: List[Req], logits: torch.Tensor, skip: Optional[Sequence[bool]] = None) -> torch.Tensor:
        """`logits` with the constrained rows masked in place."""
        if self.grammar is not None:
            self.grammar.apply_masks(reqs, logits, skip)
        return logits

    def _jump_forward(self, rewrites_only: bool = False) -> None:
        """Append text the grammar forces and re-prefill it in one extend instead of decoding it;
        also apply the rewrites of structural spans that opened in this step."""
        if self.grammar is None:
            return
        jump = self.grammar.enable_jump_forward and not rewrites_only
        for req in list(self.running):
            new_ids = self.grammar.take_rewrite(req)
            if new_ids is None and jump and req.grammar is not None:
                new_ids = self.grammar.jump_forward(req)
            if new_ids is not None:
                self._rewrite_output(req, new_ids)

    def _rewrite_output(self, req: Req, new_ids: List[int]) -> None:
        """Replace req's output by `new_ids` and send it back to prefill what changed."""
        old = req.output_ids
        keep = 0
        while keep < min(len(old) - 1, len(new_ids)) and old[keep] == new_ids[keep]:
            keep += 1
        # KV exists for the prompt and old[:-1]; cache what the new ids still share.
        self.tree_cache.cache_finished_req(req, req.origin_input_ids + old[:keep])
        req.reset_for_retract()
        req.output_ids, req.rewrite = new_ids, True
        req.epoch += 1  # a decode batch still in flight holds a token for the old output
        req.future_slot = None  # that batch's token is dropped; the extend reads output_ids
        self.running.remove(req)
        self.waiting.insert(0, req)
        self._prefill_blocked = False

    def _append_token(self, req: Req, sample, i: int) -> None:
        token = int(sample.next_token_ids[i])
        req.output_ids.append(token)
        req.num_sampling_forwards += 1
        if self.grammar is not None:
            self.grammar.accept(req, token)
        if req.return_logprob:
            req.output_token_logprobs.append((sample.logprob(i), token))
            if req.top_logprobs_num > 0:
                req.output_top_logprobs.append(sample.top_logprobs(i, req.top_logprobs_num))

    def _after_token(self, req: Req) -> List[ReqOutput]:
        req.check_finished(self.eos_token_ids, self.tokenizer)
        if req.finished():
            self.tree_cache.cache_finished_req(req)
            return [self._make_output(req)]
        if req.structural is not None and req.structural.pending is not None:
            return []  # the output is rewritten at the end of this step; it is sent after that
        n = len(req.output_ids)
        due = n % self.server_args.stream_interval == 0 if req.stream else n % NON_STREAM_FLUSH_EVERY == 0
        return [self._make_output(req)] if due else []

    def _record_input_logprobs(self, req: Req, input_logits: Optional[torch.Tensor]) -> None:
        if not req.return_logprob or req.input_token_logprobs is not None:
            return
        start = req.logprob_start_len
        ids = req.origin_input_ids
        targets = ids[start + 1 :]
        entries, tops = [], []
        if input_logits is not None and targets:
            # a slice of rows at a time: a long prompt's log-softmax over the vocabulary would
            # otherwise need another copy of all its logits (GBs) on a GPU the KV pool has filled
            chosen = []
            for a in range(0, len(targets), INPUT_LOGPROB_ROWS):
                rows = slice(a, min(a + INPUT_LOGPROB_ROWS, len(targets)))
                lp = torch.log_softmax(input_logits[rows].float(), dim=-1)
                chosen += lp[torch.arange(lp.shape[0]), torch.tensor(targets[rows])].tolist()
                if req.top_logprobs_num > 0:
                    vals, idx = lp.topk(req.top_logprobs_num, dim=-1)
                    tops += [list(zip(v, t)) for v, t in zip(vals.tolist(), idx.tolist())]
            entries = list(zip(chosen, targets))
        if start == 0:
            entries = [(None, ids[0])] + entries
            tops = [None] + tops
        req.input_token_logprobs = entries
        req.input_top_logprobs = tops if req.top_logprobs_num > 0 else None

    def _make_output(self, req: Req) -> ReqOutput:
        if req.finished():
            self._prefill_blocked = False  # its memory and request slot are free again
        sp = req.sampling_params
        rewrite, req.rewrite = req.rewrite, False
        new_ids = req.output_ids[0 if rewrite else req.send_offset :]
        req.send_offset = len(req.output_ids)
        out = ReqOutput(
            rid=req.rid,
            new_output_ids=new_ids,
            finished_reason=req.finished_reason,
            prompt_tokens=len(req.origin_input_ids),
            completion_tokens=len(req.output_ids),
            cached_tokens=req.cached_tokens,
            skip_special_tokens=getattr(sp, "skip_special_tokens", True),
            spaces_between_special_tokens=getattr(sp, "spaces_between_special_tokens", True),
            no_stop_trim=getattr(sp, "no_stop_trim", False),
            stop_strs=list(getattr(sp, "stop_strs", None) or []),
            rewrite=rewrite,
            embedding=req.embedding,
        )
        if req.return_logprob:
            self._attach_logprobs(req, out)
        return out

    def _attach_logprobs(self, req: Req, out: ReqOutput) -> None:
        if req.send_logprob_offset == 0 and req.input_token_logprobs is not None:
            out.input_token_logprobs = req.input_token_logprobs
            out.input_top_logprobs = req.input_top_logprobs
        start = req.send_logprob_offset
        out.output_token_logprobs = req.output_token_logprobs[start:]
        if req.top_logprobs_num > 0:
            out.output_top_logprobs = req.output_top_logprobs[start:]
        req.send_logprob_offset = max(len(req.output_token_logprobs), 1 if req.input_token_logprobs is not None else 0)

    # ---- control ------------------------------------------------------------------------
    def flush_cache(self) -> bool:
        self._drop_finished_inflight()
        if (self.waiting or self.running or self.chunked_req or self._inflight is not None
                or (self.grammar is not None and self.grammar.queue)):
            logger.warning("Cache not flushed because there are pending requests.")
            return False
        self.tree_cache.reset()
        self._prefill_blocked = False
        if self.grammar is not None:
            self.grammar.reset()
        self.req_to_token_pool.clear()
        self.token_to_kv_pool.clear()
        self.sampler.reset()
        return True

    def owned_slots(self) -> int:
        """KV slots held by requests and not by the prefix cache."""
        owned = 0
        for req in self.running + self._inflight_prefilled():
            owned += req.kv_allocated_len - (0 if self.tree_cache.disable else len(req.prefix_indices))
        if self.chunked_req is not None and self.tree_cache.disable:
            owned += len(self.chunked_req.prefix_indices)
        return owned

    def check_integrity(self) -> None:
        """free + cached + in use == total; the tree's own counters are consistent."""
        self.tree_cache.check_integrity()
        free = self.token_to_kv_pool.available_size()
        cached = self.tree_cache.total_size()
        used = self.owned_slots()
        total = self.max_total_num_tokens
        assert free + cached + used == total, f"KV leak: free {free} + cached {cached} + in use {used} != {total}"
        if not self.running and not self.chunked_req and self._inflight is None:
            assert self.tree_cache.protected_size() == 0, "locked cache nodes with no running request"
            assert self.req_to_token_pool.available_size() == self.req_to_token_pool.size, "request slots leaked"

    def internal_state(self) -> dict:
        try:
            self.check_integrity()
            integrity = "ok"
        except AssertionError as e:
            integrity = f"error: {e}"
        return {
            "max_total_num_tokens": self.max_total_num_tokens,
            "max_req_input_len": self.max_req_input_len,
            "max_req_len": self.max_req_len,
            "max_running_requests": self.max_running_requests,
            "available_kv_tokens": self.token_to_kv_pool.available_size(),
            "cached_tokens": self.tree_cache.total_size(),
            "evictable_tokens": self.tree_cache.evictable_size(),
            "num_running_reqs": len(self.running),
            "num_waiting_reqs": len(self.waiting),
            "num_retractions": self.num_retractions,
            "kv_integrity": integrity,
        }

    # ---- logging ------------------------------------------------------------------------
    def _token_usage(self) -> float:
        free = self.token_to_kv_pool.available_size() + self.tree_cache.evictable_size()
        return 1.0 - free / self.max_total_num_tokens

    def _log_prefill(self, batch: ScheduleBatch, adder: "PrefillAdder") -> None:
        new_tokens = sum(batch.extend_lens)
        cached = sum(batch.prefix_lens)
        hit = cached / max(cached + new_tokens, 1)
        logger.info(
            "Prefill batch. #new-seq: %d, #new-token: %d, #cached-token: %d, cache hit rate: %.2f%%, "
            "token usage: %.2f, #running-req: %d, #queue-req: %d",
            len(batch), new_tokens, cached, 100 * hit, self._token_usage(), len(self.running), len(self.waiting),
        )

    def _log_decode(self, bs: int) -> None:
        self.last_gen_tokens += bs
        if self.decode_steps % self.server_args.decode_log_interval:
            return
        now = time.perf_counter()
        throughput = self.last_gen_tokens / max(now - self.last_gen_time, 1e-9)
        self.last_gen_time, self.last_gen_tokens = now, 0
        recent = list(self.model_runner.busy_timer.samples_ms)[-self.server_args.decode_log_interval:]
        busy = sum(recent) / len(recent) if recent else 0.0
        logger.info(
            "Decode batch. #running-req: %d, #token: %d, token usage: %.2f, gen throughput (token/s): %.2f, "
            "#queue-req: %d, device busy (ms/step): %.2f",
            bs, sum(r.seqlen() for r in self.running), self._token_usage(), throughput, len(self.waiting), busy,
        )

