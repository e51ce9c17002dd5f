"""BatchSampler: keeps the running batch's SamplingBatchInfo in step with the scheduler's requests.

Requests join (after prefill) and leave (finish, retraction) the running batch; instead of
rebuilding penalty state every step, the info is filtered and merged by request id. Prefill
batches sample with a throwaway info built from the requests' full history.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from sgl.runtime.sampling.batch_info import SamplingBatchInfo
from sgl.runtime.sampling.sampler import SampleOutput, Sampler
from sgl.runtime.scheduler.req import Req


class SampleResult:
    """One sampling step's tokens. On CUDA the ids (and logprobs) are copied to pinned host memory
    without blocking; the first read waits for that copy, so the overlap scheduler can launch the
    next batch before it reads these."""

    def __init__(self, out: SampleOutput):
        self.out = out
        ids, lps = out.next_token_ids, out.logprobs
        self._event = None
        if ids.device.type == "cuda":
            ids = _to_pinned(ids)
            lps = _to_pinned(lps) if lps is not None else None
            self._event = torch.cuda.Event()
            self._event.record()
        self._host = (ids, lps)
        self._lists: Optional[Tuple[List[int], Optional[List[float]]]] = None

    def _resolve(self) -> Tuple[List[int], Optional[List[float]]]:
        if self._lists is None:
            if self._event is not None:
                self._event.synchronize()
            ids, lps = self._host
            self._lists = (ids.tolist(), lps.tolist() if lps is not None else None)
        return self._lists

    @property
    def next_token_ids(self) -> List[int]:
        return self._resolve()[0]

    def logprob(self, i: int) -> float:
        return self._resolve()[1][i]

    def top_logprobs(self, i: int, k: int) -> list:
        values, ids = self.out.top_logprobs[i]
        return list(zip(values[:k], ids[:k]))


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


class BatchSampler:
    def __init__(self, vocab_size: int, device: str, eos_token_ids: set, enable_nan_detection: bool = False):
        self.vocab_size = vocab_size
        self.device = device
        self.eos_token_ids = eos_token_ids
        self.sampler = Sampler(enable_nan_detection)
        self.info: Optional[SamplingBatchInfo] = None
        self.order: List[str] = []

    def _build(self, reqs: Sequence[Req]) -> SamplingBatchInfo:
        return SamplingBatchInfo.from_params(
            [r.sampling_params for r in reqs], self.vocab_size, self.device,
            prompt_token_ids=[r.origin_input_ids for r in reqs],
            output_token_ids=[r.output_ids for r in reqs],
            eos_token_ids=self.eos_token_ids,
        )

    def _sync(self, reqs: Sequence[Req]) -> SamplingBatchInfo:
        """Make self.info describe exactly `reqs`, in order."""
        rids = [r.rid for r in reqs]
        if self.info is not None and rids == self.order:
            return self.info
        old = {rid: i for i, rid in enumerate(self.order)}
        kept = [r for r in reqs if r.rid in old]
        new = [r for r in reqs if r.rid not in old]
        if self.info is None or not kept:
            info = self._build(reqs) if not kept else None
            self.info, self.order = info, rids
            return info
        self.info.filter([old[r.rid] for r in kept])
        if new:
            self.info.merge(self._build(new))
        current = [r.rid for r in kept + new]
        if current != rids:
            pos = {rid: i for i, rid in enumerate(current)}
            self.info.filter([pos[rid] for rid in rids])
        self.order = rids
        return self.info

    def sample(self, reqs: Sequence[Req], logits: torch.Tensor, skip: Optional[Sequence[bool]] = None) -> SampleResult:
        """Sample for a prefill batch (`skip` given) or a decode step of the running batch.
        Grammar masks are already applied to `logits` by the scheduler."""
        decode = skip is None
        info = self._sync(reqs) if decode else self._build(reqs)
        want_lp = any(r.return_logprob for r in reqs)
        tops = [r.top_logprobs_num if r.return_logprob else 0 for r in reqs]
        out = self.sampler(logits[:, : self.vocab_size], info, return_logprob=want_lp, top_logprobs_nums=tops)
        if decode:
            info.cumulate_output_tokens(out.next_token_ids)
        return SampleResult(out)

    def reset(self) -> None:
        self.info, self.order = None, []
