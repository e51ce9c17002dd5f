"""HiP block-sparse attention kernels (prefill and split-K decode) vs `hip_bsa_ref`, on scattered KV
slots, irregular lengths, GQA, RoPE on/off, 16-bit queries and fp8 pools. Tiny shapes for the
interpreter; the `gpu`-marked tests at the end use Llama-3.1-8B shapes and long contexts."""

from __future__ import annotations

import pytest
import torch

from sgltest.kernel_checks import attn_tol, rel_err
from sgl.kernels import reference as R
from sgl.kernels.hip_bsa import _check_args, decode_num_splits, hip_bsa, hip_bsa_decode, hip_bsa_prefill
from sgl.kernels.hip_reference import INVALID, hip_bsa_ref


def _rope_table(rows: int, dim: int):
    inv = 1.0 / (10000.0 ** (torch.arange(0, dim // 2, dtype=torch.float64) * 2 / dim))
    ang = torch.arange(rows, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()


def _make(gen, device, reqs, bq, heads, kv_heads, dim, dtype=torch.float32, kv_dtype=None, block_k=4, sink=4,
          window=16, kmax=6, aligned=True, ks_override=None, spare_rows=1):
    """reqs: [(context length, new queries)]; a request's queries are its last positions, cut into
    blocks of `bq`. Selected starts are drawn anywhere in [0, p_max] (those overlapping the sink or
    the window must be masked), ascending; `aligned` makes them multiples of block_k, else arbitrary
    (blocks may overlap). `spare_rows` query rows belong to no block (their output must be 0)."""
    kv_dtype = kv_dtype or dtype
    lens = [ctx for ctx, _ in reqs]
    slots = sum(lens) + 40
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 2, max_ctx=max(lens) + 3, num_slots=slots,
                                        generator=gen)
    k_buf = torch.randn(slots + 1, kv_heads, dim, generator=gen).to(kv_dtype)
    v_buf = torch.randn(slots + 1, kv_heads, dim, generator=gen).to(kv_dtype)
    blk = []  # (row, q_start, q_len, pos)
    cursor = 0
    for r, (ctx, nq) in enumerate(reqs):
        for m in range(0, nq, bq):
            blk.append((rows[r], cursor + m, min(bq, nq - m), ctx - nq + m))
        cursor += nq
    q = torch.randn(cursor + spare_rows, heads, dim, generator=gen).to(dtype)
    starts = torch.full((len(blk), kmax), INVALID, dtype=torch.int32)
    ks = torch.zeros(len(blk), dtype=torch.int32)
    for i, (_, _, qlen, pos) in enumerate(blk):
        p_max = pos + qlen - 1
        cand = torch.arange(0, p_max + 1, block_k) if aligned else torch.arange(0, p_max + 1)
        n = int(torch.randint(0, min(kmax, len(cand)) + 1, (1,), generator=gen))
        if ks_override is not None:
            n = min(ks_override[i % len(ks_override)], len(cand), kmax)
        pick = cand[torch.randperm(len(cand), generator=gen)[:n]].sort().values
        starts[i, :n] = pick.int()
        ks[i] = n
    cos, sin = _rope_table(max(lens) + sink + kmax * block_k + window + bq + 8, dim)
    cols = list(zip(*blk))
    to = lambda t: t.to(device)  # noqa: E731
    args = dict(q=to(q), k_buf=to(k_buf), v_buf=to(v_buf), block_table=to(table),
                blk_row=to(torch.tensor(cols[0], dtype=torch.int32)),
                blk_q_start=to(torch.tensor(cols[1], dtype=torch.int32)),
                blk_q_len=to(torch.tensor(cols[2], dtype=torch.int32)),
                blk_pos=to(torch.tensor(cols[3], dtype=torch.int32)),
                starts=to(starts), ks=to(ks), block_k=block_k, sink=sink, window=window, cos=to(cos), sin=to(sin),
                block_size_q=bq)
    return args


def _ref(args, extend):
    return hip_bsa_ref(**args, extend=extend)


def _check(out, ref, dtype, device, n_spare=1):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel_err(out, ref) < attn_tol(dtype, device)
    if n_spare:
        assert torch.equal(out[-n_spare:].float().cpu(), torch.zeros_like(out[-n_spare:]).float().cpu())


# ------------------------------------------------------------------------------------------------ prefill

PREFILL_REQS = [(70, 29), (45, 13), (33, 1), (20, 16)]  # blocks of 16, 13, 13, 1 and 16 queries


@pytest.mark.parametrize("heads,kv_heads,dim", [(8, 2, 64), (6, 2, 80), (4, 4, 32)])
@pytest.mark.parametrize("extend", [True, False])
def test_prefill_matches_ref(device, gen, heads, kv_heads, dim, extend):
    args = _make(gen, device, PREFILL_REQS, 16, heads, kv_heads, dim)
    out = hip_bsa(**args, extend=extend)
    _check(out, _ref(args, extend), torch.float32, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("extend", [True, False])
def test_prefill_16bit(device, gen, dtype, extend):
    args = _make(gen, device, PREFILL_REQS[:2], 16, 8, 2, 64, dtype=dtype)
    out = hip_bsa(**args, extend=extend)
    _check(out, _ref(args, extend), dtype, device)


@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_prefill_fp8_pool(device, gen, kv_dtype):
    # the reference reads the same fp8 values: only the kernel's own rounding remains
    args = _make(gen, device, PREFILL_REQS[:2], 16, 8, 2, 64, dtype=torch.bfloat16, kv_dtype=kv_dtype)
    out = hip_bsa(**args, extend=True)
    _check(out, _ref(args, True), torch.bfloat16, device)


def test_prefill_fp32_queries_over_16bit_pool(device, gen):
    args = _make(gen, device, PREFILL_REQS[:2], 16, 6, 2, 64, dtype=torch.float32, kv_dtype=torch.bfloat16)
    _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


@pytest.mark.parametrize("sink,window", [(0, 8), (4, 200), (12, 0), (0, 1)])
def test_prefill_sink_and_window_edges(device, gen, sink, window):
    # window 200 > every context: no far key is visible; window 0: only sink + selected keys
    args = _make(gen, device, [(60, 21), (9, 9)], 16, 4, 2, 64, sink=sink, window=window)
    for extend in (True, False):
        _check(hip_bsa(**args, extend=extend), _ref(args, extend), torch.float32, device)


def test_prefill_ks_zero_and_full(device, gen):
    # ks cycles 0, kmax, 1: a block with no selected block, one with all, padding never read
    args = _make(gen, device, [(90, 40), (50, 5)], 16, 8, 2, 64, window=8, kmax=5, ks_override=[0, 5, 1])
    assert (args["ks"] == 0).any()
    _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


@pytest.mark.parametrize("pad", [0, 5, -3])
def test_padding_past_ks_is_never_read(device, gen, pad):
    # padding that looks like real (or negative) starts must still be ignored, by both kernels
    for bq, reqs in ((16, [(60, 20), (40, 3)]), (1, DECODE_REQS)):
        args = _make(gen, device, reqs, bq, 4, 2, 64, window=8, kmax=6, ks_override=[1, 0, 2])
        col = torch.arange(args["starts"].shape[1], device=device)[None, :]
        args["starts"] = torch.where(col >= args["ks"][:, None], torch.full_like(args["starts"], pad), args["starts"])
        _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


def test_prefill_no_selection_slots(device, gen):
    args = _make(gen, device, [(40, 17)], 16, 4, 2, 64, kmax=0)
    _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


def test_prefill_unaligned_overlapping_starts(device, gen):
    # arbitrary (not block_k-aligned) starts, blocks may overlap: duplicates count twice in both
    args = _make(gen, device, [(80, 32), (30, 7)], 16, 8, 2, 64, block_k=8, kmax=6, aligned=False, window=10)
    for extend in (True, False):
        _check(hip_bsa(**args, extend=extend), _ref(args, extend), torch.float32, device)


@pytest.mark.parametrize("block_k", [3, 16])
def test_prefill_block_k_sizes(device, gen, block_k):
    # a non-power-of-two block size and one as long as a key tile
    args = _make(gen, device, [(100, 20)], 16, 4, 2, 64, block_k=block_k, kmax=4, window=12)
    _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


@pytest.mark.parametrize("bq", [32, 64])
def test_prefill_larger_blocks_and_empty_block(device, gen, bq):
    # bq 64: one head per program (4 head blocks per KV head); 32: two heads stacked per tile
    args = _make(gen, device, [(75, 40), (12, 3)], bq, 8, 2, 64)
    args["blk_q_len"][-1] = 0  # a block with no query writes nothing
    ref = _ref(args, True)
    out = hip_bsa(**args, extend=True)
    _check(out, ref, torch.float32, device, n_spare=4)  # the empty block's 3 rows and the spare row


def test_prefill_int64_indices_and_shuffled_blocks(device, gen):
    args = _make(gen, device, PREFILL_REQS, 16, 4, 2, 64)
    perm = torch.randperm(args["blk_row"].shape[0], generator=gen).to(device)
    for name in ("blk_row", "blk_q_start", "blk_q_len", "blk_pos", "starts", "ks"):
        args[name] = args[name][perm].long()
    args["block_table"] = args["block_table"].long()
    _check(hip_bsa(**args, extend=True), _ref(args, True), torch.float32, device)


# ------------------------------------------------------------------------------------------------ decode

DECODE_REQS = [(1, 1), (37, 1), (70, 1), (18, 1), (55, 1)]


@pytest.mark.parametrize("heads,kv_heads,dim", [(8, 2, 64), (6, 2, 80)])
@pytest.mark.parametrize("extend", [True, False])
@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_decode_matches_ref(device, gen, heads, kv_heads, dim, extend, num_splits):
    args = _make(gen, device, DECODE_REQS, 1, heads, kv_heads, dim, window=12, sink=5)
    out = hip_bsa(**args, extend=extend, num_splits=num_splits)
    _check(out, _ref(args, extend), torch.float32, device)


def test_decode_more_splits_than_keys(device, gen):
    # 16 splits of 16-key tiles: most are empty for these short lists and must weigh 0
    args = _make(gen, device, DECODE_REQS[:3], 1, 4, 1, 64, window=6, sink=3)
    _check(hip_bsa(**args, extend=True, num_splits=16), _ref(args, True), torch.float32, device)


@pytest.mark.parametrize("dtype,kv_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
                                            (torch.bfloat16, torch.float8_e4m3fn), (torch.bfloat16, torch.float8_e5m2)])
def test_decode_16bit_and_fp8(device, gen, dtype, kv_dtype):
    args = _make(gen, device, DECODE_REQS, 1, 8, 2, 64, dtype=dtype, kv_dtype=kv_dtype, window=10)
    _check(hip_bsa(**args, extend=True, num_splits=2), _ref(args, True), dtype, device)


@pytest.mark.parametrize("sink,window", [(0, 8), (4, 500), (6, 0)])
def test_decode_sink_and_window_edges(device, gen, sink, window):
    args = _make(gen, device, DECODE_REQS, 1, 4, 2, 64, sink=sink, window=window, ks_override=[0, 3, 6])
    args["blk_q_len"][1] = 0  # no query: writes nothing
    ref = _ref(args, True)
    out = hip_bsa(**args, extend=True, num_splits=2)
    _check(out, ref, torch.float32, device)
    assert torch.equal(out[1].cpu(), torch.zeros_like(out[1]).cpu())


@pytest.mark.parametrize("extend", [True, False])
def test_decode_split_kernel_matches_prefill_kernel(device, gen, extend):
    # the same single-query blocks through both kernels (prefill with block_size_q = 1)
    args = _make(gen, device, DECODE_REQS, 1, 8, 2, 64, window=9, sink=4, aligned=False)
    _check_args(**args, extend=extend)
    dec = hip_bsa_decode(**{k: v for k, v in args.items() if k != "block_size_q"}, extend=extend, num_splits=3)
    pre = hip_bsa_prefill(**args, extend=extend)
    assert rel_err(dec, pre) < attn_tol(torch.float32, device)
    _check(dec, _ref(args, extend), torch.float32, device)


def test_decode_num_splits_choice():
    from sgl.kernels.hip_bsa import BsaConfig

    cfg = BsaConfig(programs_per_sm=4, min_split_keys=128, max_splits=64)
    # one request, 8 KV heads, 3328 keys on a 4-"SM" CPU device: 16 programs wanted -> 2 splits
    assert decode_num_splits(1, 8, 1, 3328, "cpu", cfg) == 2
    assert decode_num_splits(1, 1, 1, 100_000, "cpu", cfg) == 16
    assert decode_num_splits(64, 8, 1, 3328, "cpu", cfg) == 1  # a big batch fills the GPU alone
    assert decode_num_splits(1, 1, 1, 10, "cpu", cfg) == 1  # too few keys to split


# ------------------------------------------------------------------------------------------------ arguments


def test_rejects_bad_arguments(device, gen):
    args = _make(gen, device, [(30, 5)], 16, 4, 2, 64)

    def bad(match, extend=True, **over):
        with pytest.raises(ValueError, match=match):
            hip_bsa(**{**args, **over}, extend=extend)

    bad("multiple of KV heads", q=args["q"][:, :3])
    bad("head dim mismatch", q=args["q"][..., :32])
    bad("one shape", v_buf=args["v_buf"][:, :1])
    bad("q must be", q=args["q"].double())
    bad("k_buf must be", k_buf=args["k_buf"].int())
    bad("block_table", block_table=args["block_table"].float())
    bad("blk_pos", blk_pos=args["blk_pos"][:0])
    bad("ks", ks=args["ks"].float())
    bad("starts", starts=args["starts"][0])
    bad("block_size_q", block_size_q=12)
    bad("block_k", block_k=0)
    bad("window", window=-1)
    bad("cos", cos=args["cos"][:, :8])
    bad("sin", sin=None)
    bad("float32", cos=args["cos"].half())
    bad("last dimension", q=args["q"].transpose(1, 2).contiguous().transpose(1, 2))
    bad("head dim must be even", q=args["q"][..., :63], k_buf=args["k_buf"][..., :63].contiguous(),
        v_buf=args["v_buf"][..., :63].contiguous())
    if device == "cpu":
        bad("one device", extend=False, ks=args["ks"].to("meta"))
    # cos/sin are not read without extend
    out = hip_bsa(**{**args, "cos": None, "sin": None}, extend=False)
    _check(out, _ref(args, False), torch.float32, device)


# ------------------------------------------------------------------------------------------------ GPU, real shapes

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
H, KVH, D = 32, 8, 128
GPU_TOL = attn_tol(torch.bfloat16, "cuda")


def _gpu_case(reqs, bq, kv_dtype=torch.bfloat16, sink=256, window=1024, block_k=8, kmax=256, seed=7):
    """Llama-3.1-8B layout; every block selects up to kmax aligned blocks among those between the
    sink and its window. Values are drawn on the GPU (pools of ~10^5 tokens)."""
    gen = torch.Generator().manual_seed(seed)
    cuda_gen = torch.Generator(device="cuda")
    cuda_gen.manual_seed(seed)
    lens = [ctx for ctx, _ in reqs]
    slots = sum(lens) + 1000
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 2, max_ctx=max(lens) + 8, num_slots=slots,
                                        generator=gen)
    k_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=cuda_gen).to(kv_dtype)
    v_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=cuda_gen).to(kv_dtype)
    blk, cursor = [], 0
    for r, (ctx, nq) in enumerate(reqs):
        for m in range(0, nq, bq):
            blk.append((rows[r], cursor + m, min(bq, nq - m), ctx - nq + m))
        cursor += nq
    q = (torch.randn(cursor, H, D, device="cuda", generator=cuda_gen) * D**-0.5).to(torch.bfloat16)
    starts = torch.full((len(blk), kmax), INVALID, dtype=torch.int32)
    ks = torch.zeros(len(blk), dtype=torch.int32)
    for i, (_, _, _, pos) in enumerate(blk):
        first = sink // block_k * block_k
        cand = torch.arange(first, max(first, pos - window + 1), block_k)  # empty when the window covers all
        n = min(kmax, len(cand))
        pick = cand[torch.randperm(len(cand), generator=gen)[:n]].sort().values
        starts[i, :n] = pick.int()
        ks[i] = n
    cos, sin = _rope_table(bq + window + sink + kmax * block_k + 64, D)
    cols = list(zip(*blk))
    ints = lambda xs: torch.tensor(xs, dtype=torch.int32, device="cuda")  # noqa: E731
    return dict(q=q, k_buf=k_buf, v_buf=v_buf, block_table=table.cuda(), blk_row=ints(cols[0]),
                blk_q_start=ints(cols[1]), blk_q_len=ints(cols[2]), blk_pos=ints(cols[3]), starts=starts.cuda(),
                ks=ks.cuda(), block_k=block_k, sink=sink, window=window, cos=cos.cuda(), sin=sin.cuda(),
                block_size_q=bq)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("extend", [True, False])
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e5m2])
def test_gpu_prefill_long_context(extend, kv_dtype):
    # the last 200 queries of a 128K request (4 blocks, the last of 8 queries), 130 of a 5000-token
    # one, and a 700-token request shorter than the window
    args = _gpu_case([(131072, 200), (5000, 130), (700, 64)], 64, kv_dtype=kv_dtype)
    out = hip_bsa(**args, extend=extend)
    assert rel_err(out, hip_bsa_ref(**args, extend=extend)) < GPU_TOL


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("extend", [True, False])
@pytest.mark.parametrize("num_splits", [None, 1, 7])
def test_gpu_decode_long_context(extend, num_splits):
    args = _gpu_case([(131072, 1), (65536, 1), (1, 1), (1300, 1), (20000, 1), (4096, 1)], 1)
    out = hip_bsa(**args, extend=extend, num_splits=num_splits)
    assert rel_err(out, hip_bsa_ref(**args, extend=extend)) < GPU_TOL


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_gpu_decode_single_request_fp8(kv_dtype):
    # one request: the split count alone must fill the GPU
    args = _gpu_case([(131072, 1)], 1, kv_dtype=kv_dtype, seed=9)
    out = hip_bsa(**args, extend=True)
    assert rel_err(out, hip_bsa_ref(**args, extend=True)) < GPU_TOL
    pre = hip_bsa_prefill(**args, extend=True)
    assert rel_err(out, pre) < GPU_TOL

