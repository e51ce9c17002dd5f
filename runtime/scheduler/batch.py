"""ScheduleBatch: a set of requests plus the KV slots and index tensors of their next forward.

`prepare_for_extend` gives each request a request slot and KV slots for its new tokens (evicting
from the prefix cache when needed) and writes prefix + new slots into `req_to_token`.
`prepare_for_decode` gives each request one KV slot for its last sampled token. `mixed` joins a
prepared prefill batch and a prepared decode batch into one extend forward (`--enable-mixed-chunk`).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from sgl.runtime.executor.forward_batch import ForwardMode
from sgl.runtime.executor.host_to_device import to_device
from sgl.runtime.scheduler.req import Req


class OutOfKVMemory(RuntimeError):
    pass


class ScheduleBatch:
    def __init__(self, reqs: List[Req], req_to_token_pool, token_to_kv_pool, tree_cache, device: str):
        self.reqs = reqs
        self.req_to_token_pool = req_to_token_pool
        self.token_to_kv_pool = token_to_kv_pool
        self.tree_cache = tree_cache
        self.device = device
        self.forward_mode = ForwardMode.DECODE
        self.input_ids: Optional[torch.Tensor] = None
        self.positions: Optional[torch.Tensor] = None
        self.out_cache_loc: Optional[torch.Tensor] = None
        self.seq_lens: List[int] = []
        self.prefix_lens: List[int] = []
        self.extend_lens: List[int] = []
        self.sampling_info = None
        self.num_decode_reqs = 0  # MIXED: decode requests at the end of `reqs`

    def __len__(self) -> int:
        return len(self.reqs)

    def is_empty(self) -> bool:
        return not self.reqs

    # ---- allocation -----------------------------------------------------------------------
    def alloc_token_slots(self, n: int) -> torch.Tensor:
        slots = self.token_to_kv_pool.alloc(n)
        if slots is None:
            self.tree_cache.evict(n - self.token_to_kv_pool.available_size())
            slots = self.token_to_kv_pool.alloc(n)
        if slots is None:
            raise OutOfKVMemory(f"cannot allocate {n} KV slots; available {self.token_to_kv_pool.available_size()}")
        return slots

    def prepare_for_extend(self) -> None:
        self.forward_mode = ForwardMode.EXTEND
        rows = self.req_to_token_pool.alloc(len(self.reqs))
        if rows is None:
            raise OutOfKVMemory("no free request slots")
        self.prefix_lens = [len(r.prefix_indices) for r in self.reqs]
        self.extend_lens = [r.extend_input_len for r in self.reqs]
        self.seq_lens = [p + e for p, e in zip(self.prefix_lens, self.extend_lens)]
        out_loc = self.alloc_token_slots(sum(self.extend_lens))
        ids, pos, start = [], [], 0
        for req, row, pre, ext in zip(self.reqs, rows, self.prefix_lens, self.extend_lens):
            req.req_pool_idx = row
            self.req_to_token_pool.write(row, 0, req.prefix_indices)
            self.req_to_token_pool.write(row, pre, out_loc[start : start + ext])
            req.kv_allocated_len = pre + ext
            ids.extend(req.fill_ids[pre : pre + ext])
            pos.extend(range(pre, pre + ext))
            req.cached_tokens += max(pre - req.already_computed, 0)
            req.already_computed = pre + ext
            start += ext
        self.out_cache_loc = out_loc
        self.input_ids = to_device(ids, torch.int64, self.device)
        self.positions = to_device(pos, torch.int64, self.device)

    def prepare_for_decode(self, future_ids: Optional[torch.Tensor] = None) -> None:
        """One KV slot per request for its last token. Under the overlap scheduler that token may
        still be on the device (`req.future_slot`): its input id is then read from `future_ids`."""
        self.forward_mode = ForwardMode.DECODE
        bs = len(self.reqs)
        out_loc = self.alloc_token_slots(bs)
        # KV exists for every token but the last one, whether or not the host has seen it yet.
        self.seq_lens = [r.kv_allocated_len + 1 for r in self.reqs]
        self.req_to_token_pool.write_cells([r.req_pool_idx for r in self.reqs],
                                           [r.kv_allocated_len for r in self.reqs], out_loc)
        for req in self.reqs:
            req.kv_allocated_len += 1
        self.out_cache_loc = out_loc
        ids = [r.output_ids[-1] if r.future_slot is None else -1 - r.future_slot for r in self.reqs]
        self.input_ids = to_device(ids, torch.int64, self.device)
        if any(r.future_slot is not None for r in self.reqs):
            if future_ids is None:
                raise RuntimeError("a decode input is still on the device but no future map was given")
            pending = self.input_ids < 0
            self.input_ids = torch.where(pending, future_ids[(-1 - self.input_ids).clamp_min(0)], self.input_ids)
        self.positions = to_device([s - 1 for s in self.seq_lens], torch.int64, self.device)
        self.prefix_lens = [s - 1 for s in self.seq_lens]
        self.extend_lens = [1] * bs

    @classmethod
    def mixed(cls, prefill: "ScheduleBatch", decode: "ScheduleBatch") -> "ScheduleBatch":
        """One extend forward over a prepared prefill batch and a prepared decode batch (mixed
        chunked prefill): each decode request is an extend of one token over its whole KV."""
        batch = cls(prefill.reqs + decode.reqs, prefill.req_to_token_pool, prefill.token_to_kv_pool,
                    prefill.tree_cache, prefill.device)
        batch.forward_mode = ForwardMode.MIXED
        batch.num_decode_reqs = len(decode)
        for name in ("input_ids", "positions", "out_cache_loc"):
            setattr(batch, name, torch.cat([getattr(prefill, name), getattr(decode, name)]))
        for name in ("seq_lens", "prefix_lens", "extend_lens"):
            setattr(batch, name, getattr(prefill, name) + getattr(decode, name))
        return batch

    def req_pool_indices(self) -> List[int]:
        return [r.req_pool_idx for r in self.reqs]
