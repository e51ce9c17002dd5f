"""GenerateReqInput: the `/generate` request (and `Engine.generate` arguments), normalized.

A request is single or a batch: `text` a str, or `input_ids` a flat list, means single. One
sampling-params dict is broadcast over a batch. `n > 1` in the sampling params expands each prompt
into n requests (the tokenizer manager caches the prompt first).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union


def _new_rid() -> str:
    return uuid.uuid4().hex


@dataclass
class SingleReq:
    """One normalized request of a (possibly batched) GenerateReqInput."""

    rid: str
    text: Optional[str]
    input_ids: Optional[List[int]]
    sampling_params: Dict[str, Any]
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    stream: bool = False
    index: int = 0


@dataclass
class GenerateReqInput:
    text: Optional[Union[str, List[str]]] = None
    input_ids: Optional[Union[List[int], List[List[int]]]] = None
    input_embeds: Optional[Any] = None
    image_data: Optional[Any] = None
    sampling_params: Optional[Union[Dict[str, Any], List[Dict[str, Any]]]] = None
    rid: Optional[Union[str, List[str]]] = None
    return_logprob: Optional[Union[bool, List[bool]]] = None
    logprob_start_len: Optional[Union[int, List[int]]] = None
    top_logprobs_num: Optional[Union[int, List[int]]] = None
    return_text_in_logprobs: bool = False
    stream: bool = False
    log_metrics: bool = True
    modalities: Optional[List[str]] = None
    lora_path: Optional[Any] = None
    session_params: Optional[Any] = None
    custom_logit_processor: Optional[Any] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    # ---- shape ----------------------------------------------------------------------------
    def is_single(self) -> bool:
        self._check_prompt()
        if self.text is not None:
            return isinstance(self.text, str)
        return len(self.input_ids) == 0 or isinstance(self.input_ids[0], int)

    def _check_prompt(self) -> None:
        given = [x is not None for x in (self.text, self.input_ids, self.input_embeds)]
        if sum(given) != 1:
            raise ValueError("Either text, input_ids or input_embeds should be provided")
        if self.input_embeds is not None:
            raise ValueError("input_embeds is not supported by this server")
        if self.image_data is not None:
            raise ValueError("image_data: this model is text-only")
        if self.text is not None and not isinstance(self.text, (str, list)):
            raise ValueError("text must be a string or a list of strings")
        if self.input_ids is not None and not isinstance(self.input_ids, list):
            raise ValueError("input_ids must be a list of ints or a list of lists of ints")

    def batch_size(self) -> int:
        if self.is_single():
            return 1
        return len(self.text) if self.text is not None else len(self.input_ids)

    # ---- normalization --------------------------------------------------------------------
    def split(self) -> List[SingleReq]:
        """Normalize into one SingleReq per prompt (before `n` expansion)."""
        single = self.is_single()
        bs = self.batch_size()
        if not single and bs == 0:
            raise ValueError("text / input_ids: the batch is empty")
        texts = self._per_item(self.text, bs, single, "text")
        ids = self._per_item(self.input_ids, bs, single, "input_ids")
        params = self._per_item_params(bs)
        rids = self._rids(bs, single)
        return [
            SingleReq(
                rid=rids[i],
                text=texts[i],
                input_ids=_check_ids(ids[i]) if ids[i] is not None else None,
                sampling_params=params[i],
                return_logprob=bool(self._pick(self.return_logprob, i, False, "return_logprob")),
                logprob_start_len=int(self._pick(self.logprob_start_len, i, -1, "logprob_start_len")),
                top_logprobs_num=int(self._pick(self.top_logprobs_num, i, 0, "top_logprobs_num")),
                return_text_in_logprobs=bool(self.return_text_in_logprobs),
                stream=bool(self.stream),
                index=i,
            )
            for i in range(bs)
        ]

    @staticmethod
    def _per_item(value, bs: int, single: bool, name: str) -> list:
        if value is None:
            return [None] * bs
        if single:
            return [value]
        if name == "text" and not all(isinstance(t, str) for t in value):
            raise ValueError("text must be a string or a list of strings")
        return list(value)

    def _per_item_params(self, bs: int) -> List[Dict[str, Any]]:
        sp = self.sampling_params if self.sampling_params is not None else {}
        if isinstance(sp, dict):
            return [dict(sp) for _ in range(bs)]
        if not isinstance(sp, list) or len(sp) != bs or not all(isinstance(p, dict) for p in sp):
            raise ValueError("sampling_params must be a dict or a list of dicts, one per prompt")
        return [dict(p) for p in sp]

    def _rids(self, bs: int, single: bool) -> List[str]:
        if self.rid is None:
            return [_new_rid() for _ in range(bs)]
        if single:
            if not isinstance(self.rid, str):
                raise ValueError("rid must be a string for a single request")
            return [self.rid]
        if not isinstance(self.rid, list) or len(self.rid) != bs:
            raise ValueError("rid: a batch needs a list of request ids, one per prompt")
        return [str(r) for r in self.rid]

    @staticmethod
    def _pick(value, i: int, default, name: str):
        if value is None:
            return default
        if isinstance(value, list):
            if i >= len(value):
                raise ValueError(f"{name}: list is shorter than the batch")
            return default if value[i] is None else value[i]
        if isinstance(value, bool) and name != "return_logprob":
            raise ValueError(f"{name} must be an integer")
        return value


def prompt_input(prompt: Any, rid: Any = None) -> GenerateReqInput:
    """A prompt given as text(s) or token ids (a list of ints, or of lists of ints), as in
    Engine.encode and /v1/embeddings' `input` -> the request."""
    is_ids = isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], str)
    return GenerateReqInput(text=None if is_ids else prompt, input_ids=prompt if is_ids else None, rid=rid)


def _check_ids(ids: Any) -> List[int]:
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ValueError("input_ids must be a list of integers")
    return ids
