"""GPU checks at real shapes: Llama-3.1-8B head layout (32 q / 8 KV heads x 128), bf16, long
contexts, fp8 pools, CUDA-graph capture of decode, and the layer dispatch hooks."""

from __future__ import annotations

import pytest
import torch

from sgltest.backend_world import World, compare_layers, fake_runner
from sgltest.kernel_checks import rel_err, ulp_close
from sgl.kernels import reference as R

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

H, KVH, D = 32, 8, 128
BF16_TOL = 1e-2  # relative-norm error of bf16 attention (P rounded to bf16 before the PV dot)


@pytest.fixture
def cuda_gen() -> torch.Generator:
    g = torch.Generator(device="cuda")
    g.manual_seed(4321)
    return g


def _decode_case(gen, lens, kv_dtype=torch.bfloat16, slots=None):
    slots = slots or sum(lens) + 1000
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 4, max_ctx=max(lens) + 8, num_slots=slots)
    k_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=gen).to(kv_dtype)
    v_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=gen).to(kv_dtype)
    q = torch.randn(len(lens), H, D, device="cuda", generator=gen).to(torch.bfloat16)
    return q, k_buf, v_buf, table.cuda(), torch.tensor(rows, device="cuda"), torch.tensor(lens, device="cuda")


def _decode(q, k_buf, v_buf, table, idx, seq, splits):
    from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention

    out = torch.full_like(q, float("nan"))
    mid_o, mid_lse = alloc_decode_scratch(q.shape[0], H, D, splits, "cuda")
    decode_attention(q, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, D**-0.5, splits)
    return out


@pytest.mark.parametrize("splits", [1, 8, 32])
def test_decode_long_mixed_lengths(cuda_gen, splits):
    lens = [1, 100, 4097, 32768, 20000, 3, 8191, 512]
    case = _decode_case(cuda_gen, lens)
    out = _decode(*case, splits)
    assert rel_err(out, R.decode_attention_ref(*case, D**-0.5)) < BF16_TOL


@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_decode_fp8_pool(cuda_gen, kv_dtype):
    case = _decode_case(cuda_gen, [5000, 17, 1024], kv_dtype=kv_dtype)
    out = _decode(*case, 8)
    assert rel_err(out, R.decode_attention_ref(*case, D**-0.5)) < BF16_TOL


def test_decode_replays_in_cuda_graph_with_new_lengths(cuda_gen):
    """Capture once, then change req_pool_indices / seq_lens in place and replay: the split counts
    must follow the new lengths (they are derived on the device, not baked into the graph)."""
    from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention

    q, k_buf, v_buf, table, idx_all, seq_all = _decode_case(cuda_gen, [3000, 40, 9000, 1, 50, 7000])
    idx, seq = idx_all[:4].clone(), seq_all[:4].clone()  # the graph's static inputs
    qq, out = q[:4].clone(), torch.empty_like(q[:4])
    mid_o, mid_lse = alloc_decode_scratch(4, H, D, 16, "cuda")

    def step():
        decode_attention(qq, k_buf, v_buf, out, table, idx, seq, mid_o, mid_lse, D**-0.5, 16)

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        step()  # compile outside the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            step()
    torch.cuda.synchronize()
    # other requests, with lengths up to what their rows hold: split counts 16, 16, 1, 1
    idx.copy_(idx_all[[5, 0, 2, 4]])
    seq.copy_(torch.tensor([6999, 2999, 1, 50], device="cuda"))
    qq.copy_(torch.randn(qq.shape, device="cuda", generator=cuda_gen).to(qq.dtype))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(out, R.decode_attention_ref(qq, k_buf, v_buf, table, idx, seq, D**-0.5)) < BF16_TOL


def _extend_case(gen, prefix, extend, kv_dtype=torch.bfloat16):
    total = [p + e for p, e in zip(prefix, extend)]
    slots = sum(total) + 1000
    table, rows = R.random_req_to_token(total, rows=len(total) + 4, max_ctx=max(total) + 8, num_slots=slots)
    k_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=gen).to(kv_dtype)
    v_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=gen).to(kv_dtype)
    t = sum(extend)
    q = torch.randn(t, H, D, device="cuda", generator=gen).to(torch.bfloat16)
    k = torch.randn(t, KVH, D, device="cuda", generator=gen).to(torch.bfloat16)
    v = torch.randn(t, KVH, D, device="cuda", generator=gen).to(torch.bfloat16)
    lens = [torch.tensor(x, device="cuda") for x in (rows, prefix, extend)]
    return q, k, v, k_buf, v_buf, table.cuda(), lens


def _extend(q, k, v, k_buf, v_buf, table, lens):
    from sgl.kernels.extend_attention import default_extend_config, extend_attention, plan_extend_tiles

    idx, prefix, extend = lens
    cfg = default_extend_config(D)
    tiles = plan_extend_tiles(extend.tolist(), prefix.tolist(), cfg.block_m, "cuda")
    starts = torch.cumsum(extend, 0) - extend
    out = torch.full_like(q, float("nan"))
    extend_attention(q, k, v, out, k_buf, v_buf, table, idx, prefix, extend, starts, tiles, D**-0.5, cfg)
    return out


@pytest.mark.parametrize("prefix,extend", [
    ([0], [8192]),  # the benchmark's 8K causal prefill
    ([3000, 0, 700, 129, 5], [1000, 2049, 1, 127, 64]),  # mixed: chunked prefill beside short requests
])
def test_extend_real_shapes(cuda_gen, prefix, extend):
    q, k, v, k_buf, v_buf, table, lens = _extend_case(cuda_gen, prefix, extend)
    out = _extend(q, k, v, k_buf, v_buf, table, lens)
    ref = R.extend_attention_ref(q, k, v, k_buf, v_buf, table, *lens, D**-0.5)
    assert rel_err(out, ref) < BF16_TOL


def test_extend_fp8_prefix(cuda_gen):
    q, k, v, k_buf, v_buf, table, lens = _extend_case(cuda_gen, [2000, 333], [300, 77], kv_dtype=torch.float8_e4m3fn)
    out = _extend(q, k, v, k_buf, v_buf, table, lens)
    assert rel_err(out, R.extend_attention_ref(q, k, v, k_buf, v_buf, table, *lens, D**-0.5)) < BF16_TOL


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_kv_store_casts_like_torch(cuda_gen, kv_dtype):
    from sgl.kernels.kv_store import store_kv

    bufs = [torch.zeros(5000, KVH, D, device="cuda").to(kv_dtype) for _ in range(2)]
    refs = [b.clone() for b in bufs]
    kv = torch.randn(300, 2 * KVH * D, device="cuda", generator=cuda_gen).to(torch.bfloat16)
    k, v = kv[:, : KVH * D], kv[:, KVH * D :]
    loc = torch.randperm(4999, device="cuda")[:300] + 1
    store_kv(bufs[0], bufs[1], loc, k, v)
    R.kv_store_ref(refs[0], refs[1], loc, k.view(-1, KVH, D), v.view(-1, KVH, D))
    for got, want in zip(bufs, refs):
        assert torch.equal(got.float(), want.float())  # in-range values: both round to nearest even


def test_backend_matches_torch_native_llama_layout(cuda_gen):
    from sgl.runtime.attention.torch_native import TorchNativeAttnBackend
    from sgl.runtime.attention.triton_backend import TritonAttnBackend
    from sgl.runtime.executor.forward_batch import ForwardMode

    gen = torch.Generator()
    gen.manual_seed(99)
    world = World("cuda", gen, H, KVH, D, torch.bfloat16, num_reqs=5, max_ctx=4096, slots=12000, dtype=torch.bfloat16)
    backends = [TritonAttnBackend(fake_runner(H, D, "cuda", splits=8, kv_heads=KVH)), TorchNativeAttnBackend()]
    world.fill_prefix([0, 1500, 37, 2900, 64])
    extend = [700, 129, 1, 300, 64]
    fbs = world.twin_batches(ForwardMode.EXTEND, backends, extend, [0, 1500, 37, 2900, 64])
    compare_layers(world, backends, fbs, BF16_TOL)
    for _ in range(3):
        compare_layers(world, backends, world.twin_batches(ForwardMode.DECODE, backends, [1] * 5), BF16_TOL)


def test_layer_hooks_match_torch_paths(cuda_gen, monkeypatch):
    """RMSNorm / RoPE / SiLU layers on CUDA take the Triton path; with the kill switch they take the
    torch path; both agree within two bf16 ulps."""
    from sgl.kernels.utils import DISABLE_ENV
    from sgl.runtime.layers.activation import SiluAndMul
    from sgl.runtime.layers.layernorm import RMSNorm
    from sgl.runtime.layers.rotary import RotaryEmbedding

    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    norm = RMSNorm(4096, 1e-5).cuda().to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(4096, device="cuda", generator=cuda_gen))
    rope = RotaryEmbedding(D, D, 131072, 500000.0, llama3)
    x = torch.randn(77, 4096, device="cuda", generator=cuda_gen).to(torch.bfloat16)
    res = torch.randn(77, 4096, device="cuda", generator=cuda_gen).to(torch.bfloat16)
    qkv = torch.randn(77, (H + 2 * KVH) * D, device="cuda", generator=cuda_gen).to(torch.bfloat16)
    q, k, _ = qkv.split([H * D, KVH * D, KVH * D], dim=-1)
    pos = torch.randint(0, 131072, (77,), device="cuda", generator=cuda_gen)
    gate_up = torch.randn(77, 2 * 14336, device="cuda", generator=cuda_gen).to(torch.bfloat16)

    def run():
        return [norm(x), *norm(x, res), *rope(pos, q, k), SiluAndMul()(gate_up)]

    fast = run()
    monkeypatch.setenv(DISABLE_ENV, "1")
    slow = run()
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert ulp_close(a, b)


@pytest.mark.parametrize("tokens", [1, 5, 300])
def test_fused_moe_mixtral_layout(cuda_gen, tokens):
    """8 experts, top-2, bf16 (Mixtral's routing at a quarter of its width), and one capture +
    replay in a CUDA graph with new routing (moe_align_block_size must not read back to the host)."""
    from sgl.kernels.fused_moe import fused_moe
    from sgl.runtime.layers.moe import select_experts

    experts, hidden, inter = 8, 1024, 3584
    x = torch.randn(tokens, hidden, device="cuda", generator=cuda_gen).bfloat16()
    w13 = (torch.randn(experts, 2 * inter, hidden, device="cuda", generator=cuda_gen) * hidden**-0.5).bfloat16()
    w2 = (torch.randn(experts, hidden, inter, device="cuda", generator=cuda_gen) * inter**-0.5).bfloat16()
    logits = torch.randn(tokens, experts, device="cuda", generator=cuda_gen)
    weights, ids = select_experts(logits, 2)
    assert rel_err(fused_moe(x, w13, w2, weights, ids), R.fused_moe_ref(x, w13, w2, weights, ids)) < BF16_TOL
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_moe(x, w13, w2, weights, ids)
    new_weights, new_ids = select_experts(torch.randn(tokens, experts, device="cuda", generator=cuda_gen), 2)
    weights.copy_(new_weights)
    ids.copy_(new_ids)
    graph.replay()
    assert rel_err(out, R.fused_moe_ref(x, w13, w2, weights, ids)) < BF16_TOL
