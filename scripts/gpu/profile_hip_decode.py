"""Kernel time of one HiP decode step per layer (Llama-3.1-8B shape, batch 1, 3K preset) by kernel,
for a step that refreshes from stage 1 and one from stage 3 (issue 14). Usage: python3 THIS [context]"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from sgl.runtime.attention.hip.config import load_hip_config
from sgl.runtime.attention.hip.mask import QueryBlocks, block_sparse_attention, estimate_mask, rope_table_size
from sgl.runtime.layers.rotary import get_rope

H, KVH, D = 32, 8, 128
cfg_all = load_hip_config("3K")
cfg = cfg_all.layers[-1]
dev = "cuda"
rope = get_rope(D, D, 131072, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
T = int(sys.argv[1]) if len(sys.argv) > 1 else 1048576
g = torch.Generator(device=dev).manual_seed(0)
k_buf = torch.randn(T + 1, KVH, D, device=dev, dtype=torch.bfloat16, generator=g)
v_buf = torch.randn(T + 1, KVH, D, device=dev, dtype=torch.bfloat16, generator=g)
table = torch.arange(1, T + 1, device=dev, dtype=torch.int32)[None, :]
cos, sin = rope.cos_sin(torch.arange(rope_table_size(cfg_all.layers, cfg_all.block_size_q, T), device=dev))
q = torch.randn(1, H, D, device=dev, dtype=torch.bfloat16, generator=g) * D ** -0.5
blocks = QueryBlocks.for_decode(torch.zeros(1, dtype=torch.long, device=dev), torch.tensor([T], device=dev), T)
full = estimate_mask(q, k_buf, table, blocks, cfg, True, cos, sin)


def step(s):
    rf = torch.full((1,), s, dtype=torch.long, device=dev)
    m = estimate_mask(q, k_buf, table, blocks, cfg, True, cos, sin, from_stage=s, cached=full, row_from=rf)
    return block_sparse_attention(q, k_buf, v_buf, table, blocks, m, cfg, True, cos, sin)


for s in (0, 2):
    for _ in range(5):
        step(s)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step(s)
        torch.cuda.synchronize()
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
    print(f"=== context {T}, refresh from stage {s + 1}: kernel time per step "
          f"{sum(e.self_device_time_total for e in ev) / 10:.1f} us")
    for e in ev[:14]:
        if e.self_device_time_total > 0:
            print(f"{e.self_device_time_total / 10:8.1f} us  x{e.count / 10:4.1f}  {e.key[:90]}")
