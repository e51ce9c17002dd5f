"""What crosses processes: small picklable dataclasses sent over ZeroMQ.

tokenizer manager -> scheduler: TokenizedGenerateReqInput, TokenizedEmbeddingReqInput, AbortReq, FlushCacheReq, GetInternalStateReq
scheduler -> detokenizer: BatchTokenIDOut (per-request deltas of output ids)
detokenizer -> tokenizer manager: BatchStrOut (cumulative text)
scheduler -> tokenizer manager: FlushCacheResp, GetInternalStateResp (through the detokenizer)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class TokenizedGenerateReqInput:
    rid: str
    input_text: Optional[str]
    input_ids: List[int]
    sampling_params: Any  # a normalized SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    stream: bool = False


@dataclass
class TokenizedEmbeddingReqInput:
    """An /encode, /classify or /v1/embeddings prompt: prefilled and pooled, never decoded."""

    rid: str
    input_text: Optional[str]
    input_ids: List[int]


@dataclass
class AbortReq:
    rid: str
    message: str = "Aborted by the client"


@dataclass
class FlushCacheReq:
    pass


@dataclass
class FlushCacheResp:
    success: bool


@dataclass
class GetInternalStateReq:
    pass


@dataclass
class GetInternalStateResp:
    state: Dict[str, Any]


@dataclass
class ReqOutput:
    """One request's progress since its last update."""

    rid: str
    new_output_ids: List[int]
    finished_reason: Optional[Any]  # a finish_reason object, None while running
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    stop_strs: List[str] = field(default_factory=list)
    # logprob deltas: lists of (logprob|None, token_id); top: list of list of (logprob, token_id)
    input_token_logprobs: Optional[list] = None
    input_top_logprobs: Optional[list] = None
    output_token_logprobs: Optional[list] = None
    output_top_logprobs: Optional[list] = None
    error: Optional[str] = None
    # True when the output ids were rewritten (jump-forward re-tokenization): new_output_ids then
    # holds the whole output and the detokenizer starts that request over.
    rewrite: bool = False
    # a pooling model's result (embedding, or reward scores) for a finished request
    embedding: Optional[List[float]] = None


@dataclass
class BatchTokenIDOut:
    outputs: List[ReqOutput]


@dataclass
class StrOutput:
    rid: str
    text: str  # cumulative, printable
    output_ids: List[int]  # cumulative
    finished_reason: Optional[Dict[str, Any]]
    meta: Dict[str, Any]
    input_token_logprobs: Optional[list] = None
    input_top_logprobs: Optional[list] = None
    output_token_logprobs: Optional[list] = None
    output_top_logprobs: Optional[list] = None
    embedding: Optional[List[float]] = None


@dataclass
class BatchStrOut:
    outputs: List[StrOutput]
