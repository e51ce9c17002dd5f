"""TritonAttnBackend vs the torch-native oracle backend through real ForwardBatch / KV pools:
an extend batch with mixed prefixes, then decode steps, eagerly and through the CUDA-graph hooks,
and a MIXED batch (prefill plus decode requests in one forward)."""

from __future__ import annotations

import pytest
import torch

from sgltest.backend_world import World, compare_layers, fake_runner
from sgltest.kernel_checks import rel_err
from sgl.runtime.attention.torch_native import TorchNativeAttnBackend
from sgl.runtime.attention.triton_backend import TritonAttnBackend
from sgl.runtime.executor.forward_batch import ForwardMode

PREFIX, EXTEND = [0, 7, 20], [5, 13, 1]


@pytest.mark.parametrize("heads,kv_heads,head_dim,kv_dtype", [
    (4, 4, 64, torch.float32),
    (8, 2, 128, torch.float32),
    (8, 2, 64, torch.float8_e4m3fn),
])
def test_backend_matches_torch_native(device, gen, heads, kv_heads, head_dim, kv_dtype):
    world = World(device, gen, heads, kv_heads, head_dim, kv_dtype)
    backends = [TritonAttnBackend(fake_runner(heads, head_dim, device)), TorchNativeAttnBackend()]
    # fp8: extend reads the new tokens' K/V unrounded, the oracle reads them back from the fp8 pool
    tol_extend = 6e-2 if kv_dtype != torch.float32 else 1e-4
    world.fill_prefix(PREFIX)
    compare_layers(world, backends, world.twin_batches(ForwardMode.EXTEND, backends, EXTEND, PREFIX), tol_extend)
    for _ in range(2):
        fbs = world.twin_batches(ForwardMode.DECODE, backends, [1, 1, 1])
        compare_layers(world, backends, fbs, 1e-4)


@pytest.mark.parametrize("kv_heads", [8, 2])
def test_mixed_batch_matches_torch_native(device, gen, kv_heads):
    """A MIXED batch (--enable-mixed-chunk): three prefill requests, then two decode requests whose
    one token each goes through the decode kernel; the oracle runs the whole batch as an extend."""
    heads, head_dim = 8, 64
    world = World(device, gen, heads, kv_heads, head_dim, torch.float32, num_reqs=5)
    backends = [TritonAttnBackend(fake_runner(heads, head_dim, device)), TorchNativeAttnBackend()]
    prefix = [0, 7, 20, 33, 12]
    world.fill_prefix(prefix)
    fbs = world.twin_batches(ForwardMode.MIXED, backends, [5, 13, 2, 1, 1], prefix)
    for fb in fbs:
        fb.num_decode_reqs = 2
    compare_layers(world, backends, fbs, 1e-4)
    assert fbs[0].attn_metadata.decode.mid_o.shape[0] == 2, "the decode tail was not planned as decode"


def test_cuda_graph_hooks_plan_padded_decode(device, gen):
    """The capture/replay hooks as the graph runner calls them (on CPU nothing is captured, but the
    forward runs exactly as captured: no attn_metadata, static scratch, a padded row)."""
    heads, kv_heads, head_dim = 8, 2, 64
    world = World(device, gen, heads, kv_heads, head_dim, torch.float32)
    ours = TritonAttnBackend(fake_runner(heads, head_dim, device))
    ref = TorchNativeAttnBackend()
    world.fill_prefix([9, 30, 2])
    ours.init_cuda_graph_state(max_bs=4)
    fb_ours, fb_ref = world.twin_batches(ForwardMode.DECODE, [ours, ref], [1, 1, 1])
    # the runner's static tensors: 3 real rows, one padded (row 0, seq_len = fill value, dummy slot)
    pad = ours.get_cuda_graph_seq_len_fill_value()
    fb_ours.req_pool_indices = torch.cat([fb_ours.req_pool_indices, torch.zeros(1, dtype=torch.int64, device=device)])
    fb_ours.seq_lens = torch.cat([fb_ours.seq_lens, torch.full((1,), pad, device=device)])
    fb_ours.out_cache_loc = torch.cat([fb_ours.out_cache_loc, torch.zeros(1, dtype=torch.int64, device=device)])
    fb_ours.batch_size = 4
    ours.init_forward_metadata_capture_cuda_graph(4, fb_ours.req_pool_indices, fb_ours.seq_lens)
    ours.init_forward_metadata_replay_cuda_graph(4, fb_ours.req_pool_indices, fb_ours.seq_lens, None)
    ref.init_forward_metadata(fb_ref)
    for layer in world.layers:
        q, k, v = world.qkv(4)
        out = ours.forward(q, k, v, layer, fb_ours)
        expect = ref.forward(q[:3], k[:3], v[:3], layer, fb_ref)
        assert torch.isfinite(out).all()
        assert rel_err(out[:3], expect) < 1e-4
    with pytest.raises(ValueError, match="no CUDA graph"):
        ours.init_forward_metadata_replay_cuda_graph(2, fb_ours.req_pool_indices[:2], fb_ours.seq_lens[:2])
    with pytest.raises(ValueError, match="exceeds"):
        ours.init_forward_metadata_capture_cuda_graph(5, torch.zeros(5), torch.ones(5))


def test_backend_rejects_bad_split_flag(device):
    with pytest.raises(ValueError, match="triton-attention-num-kv-splits"):
        TritonAttnBackend(fake_runner(4, 64, device, splits=0))


@pytest.mark.parametrize("mode", [ForwardMode.EXTEND, ForwardMode.MIXED])
def test_soft_cap_and_sliding_window_layers_match_torch_native(device, gen, mode):
    """Gemma 2's layer variants: the first layer windowed (window shorter than the prefixes) and
    soft-capped, the second soft-capped only; an extend (or mixed) batch, then decode steps."""
    heads, kv_heads, head_dim = 8, 2, 64
    world = World(device, gen, heads, kv_heads, head_dim, torch.float32, num_reqs=5)
    world.layers[0].logit_cap, world.layers[0].sliding_window_size = 0.5, 5
    world.layers[1].logit_cap = 0.5
    backends = [TritonAttnBackend(fake_runner(heads, head_dim, device)), TorchNativeAttnBackend()]
    prefix = [0, 7, 20, 33, 12]
    world.fill_prefix(prefix)
    fbs = world.twin_batches(mode, backends, [5, 13, 2, 1, 1], prefix)
    for fb in fbs:
        fb.num_decode_reqs = 2 if mode == ForwardMode.MIXED else 0
    compare_layers(world, backends, fbs, 1e-4)
    for _ in range(2):
        compare_layers(world, backends, world.twin_batches(ForwardMode.DECODE, backends, [1] * 5), 1e-4)
