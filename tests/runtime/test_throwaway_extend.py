"""The throwaway extend forward (memory profile, kernel builds at start-up) leaves the real pools alone."""

import torch

from sgl.runtime.executor.model_runner import throwaway_extend


def test_throwaway_extend_with_and_without_prefixes(base_runner):
    pool = base_runner.token_to_kv_pool
    free = pool.available_size()
    k0 = pool.k_buffer[0].clone()
    assert throwaway_extend(base_runner, [16], [16]) == 0  # CPU: no peak to measure
    assert throwaway_extend(base_runner, [5, 7, 3], [0, 4, 0]) == 0
    assert pool.available_size() == free
    assert torch.equal(pool.k_buffer[0], k0)
