"""fp8 KV cache on the CPU (torch-native backend): the pool stores one byte per value and greedy
text stays close to the full-precision cache's. (On the GPU, tests/runtime/test_gpu_greedy.py
checks the Triton kernels over an fp8 cache against the torch-native backend.)"""

import pytest
import torch

from sgltest.runtime_helpers import PROMPTS, run_all, submit

NEW = 16


def _greedy(sched, tokenizer):
    for i, p in enumerate(PROMPTS):
        submit(sched, tokenizer, str(i), tokenizer.encode(p), max_new_tokens=NEW, temperature=0, ignore_eos=True)
    return {rid: r["ids"] for rid, r in run_all(sched).items()}


@pytest.mark.parametrize("kv", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_kv_end_to_end(make_scheduler, tokenizer, kv):
    full = make_scheduler()
    fp8 = make_scheduler(kv_cache_dtype=kv)
    pool = fp8.token_to_kv_pool
    assert pool.k_buffer[0].element_size() == 1 and pool.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
    a, b = _greedy(full, tokenizer), _greedy(fp8, tokenizer)
    # Quantized keys and values move logits a little: most prompts keep their first tokens.
    same_start = sum(a[r][:4] == b[r][:4] for r in a)
    assert same_start >= len(PROMPTS) - 2, (a, b)
    agree = sum(x == y for r in a for x, y in zip(a[r], b[r])) / sum(len(a[r]) for r in a)
    assert agree > 0.5, agree

