"""ForwardBatch: the tensors one model forward needs, built by the model runner from a schedule batch.

Vocabulary (docs/glossary.md): an *extend* forward runs new tokens of each request over its cached
prefix (prefill and chunked prefill are extends); a *decode* forward runs exactly one new token per
request. `out_cache_loc` holds the KV slots the new tokens are written to; `req_to_token` rows of the
batch (indexed by `req_pool_indices`) hold the slots of every token, prefix included.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Optional

import torch

if TYPE_CHECKING:
    from sgl.runtime.attention.base import AttentionBackend
    from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool


class ForwardMode(enum.IntEnum):
    EXTEND = 1
    DECODE = 2
    IDLE = 3
    # An extend whose last `num_decode_reqs` requests are decode steps (mixed chunked prefill).
    # Backends may treat it as a plain extend; the Triton backend runs that tail as decode.
    MIXED = 4

    def is_extend(self) -> bool:
        return self in (ForwardMode.EXTEND, ForwardMode.MIXED)

    def is_mixed(self) -> bool:
        return self == ForwardMode.MIXED

    def is_decode(self) -> bool:
        return self == ForwardMode.DECODE


@dataclass
class ForwardBatch:
    forward_mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    req_pool_indices: torch.Tensor  # [bs] int64: rows of req_to_token
    seq_lens: torch.Tensor  # [bs] int64: total length after this forward (prefix + new)
    out_cache_loc: torch.Tensor  # [num_tokens] int64: KV slots of the new tokens
    req_to_token_pool: "ReqToTokenPool"
    token_to_kv_pool: "TokenToKVPool"
    attn_backend: "AttentionBackend"
    # extend only
    extend_seq_lens: Optional[torch.Tensor] = None  # [bs] new tokens per request
    extend_prefix_lens: Optional[torch.Tensor] = None  # [bs] cached tokens per request
    extend_start_loc: Optional[torch.Tensor] = None  # [bs] offset of each request in input_ids
    num_decode_reqs: int = 0  # MIXED: the last this-many requests have one new token each
    # host copies for Python-side planning (avoid device syncs)
    seq_lens_cpu: Optional[List[int]] = None
    req_pool_indices_cpu: Optional[List[int]] = None
    extend_seq_lens_cpu: Optional[List[int]] = None
    extend_prefix_lens_cpu: Optional[List[int]] = None
    # logits: which token positions need logits (extend: last token of each request unless
    # input logprobs are requested)
    return_logprob: bool = False
    extend_logprob_start_lens_cpu: Optional[List[int]] = None
    # free-form per-backend plan filled by init_forward_metadata
    attn_metadata: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
