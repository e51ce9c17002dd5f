"""The detokenizer process: token-id deltas in, cumulative printable text out.

Per request it keeps an incremental decode state (see `detokenize.py`), accumulates logprobs,
holds back a tail that may be the start of a stop string (so streamed text never shows what the
final trim removes), and forwards control responses from the scheduler unchanged.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional

from sgl.runtime.detokenizer.incremental import DecodeState, detokenize_batch
from sgl.runtime.sampling.finish_reason import finish_reason_to_json
from sgl.runtime.ipc.messages import BatchStrOut, BatchTokenIDOut, ReqOutput, StrOutput

logger = logging.getLogger(__name__)
MAX_STATES = 65536


def hold_back_stop_prefix(text: str, stops: List[str]) -> str:
    """Cut at a complete stop string, or drop a tail that could still grow into one."""
    if not stops:
        return text
    cut = len(text)
    for stop in stops:
        pos = text.find(stop)
        if pos != -1:
            cut = min(cut, pos)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                cut = min(cut, len(text) - k)
                break
    return text[:cut]


@dataclass
class _ReqText:
    decode: DecodeState
    output_ids: List[int] = field(default_factory=list)
    input_token_logprobs: Optional[list] = None
    input_top_logprobs: Optional[list] = None
    output_token_logprobs: list = field(default_factory=list)
    output_top_logprobs: list = field(default_factory=list)


class Detokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.states: "OrderedDict[str, _ReqText]" = OrderedDict()

    def _state(self, rid: str) -> _ReqText:
        st = self.states.get(rid)
        if st is None:
            st = _ReqText(DecodeState.from_context(()))
            self.states[rid] = st
            if len(self.states) > MAX_STATES:
                self.states.popitem(last=False)
        return st

    def process(self, batch: BatchTokenIDOut) -> BatchStrOut:
        states = []
        for out in batch.outputs:
            st = self._state(out.rid)
            if out.rewrite:
                st.decode, st.output_ids = DecodeState.from_context(()), []
            st.output_ids.extend(out.new_output_ids)
            st.decode.decode_ids.extend(out.new_output_ids)
            _accumulate_logprobs(st, out)
            states.append(st)
        texts = self._texts(batch.outputs, states)
        results = [self._str_output(out, st, text) for out, st, text in zip(batch.outputs, states, texts)]
        for out in batch.outputs:
            if out.finished_reason is not None:
                self.states.pop(out.rid, None)
        return BatchStrOut(results)

    def _texts(self, outputs: List[ReqOutput], states: List[_ReqText]) -> List[str]:
        if self.tokenizer is None:
            return [""] * len(outputs)
        # SGLang quirk kept on purpose: the first request's options apply to the whole batch.
        texts = detokenize_batch(
            self.tokenizer,
            [st.decode for st in states],
            [o.finished_reason for o in outputs],
            [o.no_stop_trim for o in outputs],
            outputs[0].skip_special_tokens,
            outputs[0].spaces_between_special_tokens,
        )
        return [
            t if o.finished_reason is not None or o.no_stop_trim else hold_back_stop_prefix(t, o.stop_strs)
            for o, t in zip(outputs, texts)
        ]

    def _str_output(self, out: ReqOutput, st: _ReqText, text: str) -> StrOutput:
        return StrOutput(
            rid=out.rid,
            text=text,
            output_ids=list(st.output_ids),
            finished_reason=finish_reason_to_json(out.finished_reason),
            meta={
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "cached_tokens": out.cached_tokens,
                **({"error": out.error} if out.error else {}),
            },
            input_token_logprobs=st.input_token_logprobs,
            input_top_logprobs=st.input_top_logprobs,
            output_token_logprobs=list(st.output_token_logprobs),
            output_top_logprobs=list(st.output_top_logprobs),
            embedding=out.embedding,
        )


def _accumulate_logprobs(st: _ReqText, out: ReqOutput) -> None:
    if out.input_token_logprobs is not None:
        st.input_token_logprobs = out.input_token_logprobs
        st.input_top_logprobs = out.input_top_logprobs
    if out.output_token_logprobs:
        st.output_token_logprobs.extend(out.output_token_logprobs)
    if out.output_top_logprobs:
        st.output_top_logprobs.extend(out.output_top_logprobs)


def run_detokenizer_process(server_args, port_args) -> None:
    import zmq

    from sgl.runtime.entry.process_utils import configure_child_process

    configure_child_process("detokenizer", server_args)
    tokenizer = None
    if not server_args.skip_tokenizer_init:
        from sgl.runtime.models.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(server_args.tokenizer_path, server_args.tokenizer_mode, server_args.trust_remote_code)
    ctx = zmq.Context(2)
    recv = ctx.socket(zmq.PULL)
    recv.bind(port_args.detokenizer_ipc_name)
    send = ctx.socket(zmq.PUSH)
    send.connect(port_args.tokenizer_ipc_name)
    detok = Detokenizer(tokenizer)
    while True:
        msg = recv.recv_pyobj()
        send.send_pyobj(detok.process(msg) if isinstance(msg, BatchTokenIDOut) else msg)
