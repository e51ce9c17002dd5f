"""HiP pruning stage kernel vs `hip_prune_stage_ref`: scores, -inf pattern and the top-k chunk sets, on
scattered KV slots, extend / partial / decode blocks, padded candidate lists and all RoPE modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import pytest
import torch

from sgl.kernels import reference as R
from sgl.kernels.hip_reference import INVALID, ROPE_NONE, ROPE_RELATIVE, ROPE_STREAMING, hip_prune_stage_ref

MODES = [ROPE_NONE, ROPE_STREAMING, ROPE_RELATIVE]


@dataclass
class Case:
    q: torch.Tensor
    k_buf: torch.Tensor
    table: torch.Tensor
    row: torch.Tensor
    q_start: torch.Tensor
    q_len: torch.Tensor
    pos: torch.Tensor
    left: torch.Tensor
    n_active: torch.Tensor
    chunk: int
    stride: int
    sw_scan: int
    mode: int
    cos: torch.Tensor
    sin: torch.Tensor
    bq: int

    def args(self):
        return (self.q, self.k_buf, self.table, self.row, self.q_start, self.q_len, self.pos, self.left, self.n_active,
                self.chunk, self.stride, self.sw_scan, self.mode, self.cos, self.sin, self.bq)


def rope_table(rows: int, dim: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    inv = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    ang = torch.arange(rows, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float().to(device), ang.sin().float().to(device)


def make_case(device, gen, *, mode: int, heads: int = 8, kv_heads: int = 2, head_dim: int = 64,
              chunk: int = 8, stride: int = 4, bq: int = 16, sw_scan: int = 6, sink: int = 2,
              reqs: Sequence[Tuple[int, int]] = ((70, 23), (3, 16), (150, 7)), decode: Optional[Sequence[int]] = None,
              q_dtype=torch.float32, kv_dtype=None, subset: bool = False, pad: int = 0, integer: bool = False,
              q_scale: float = 0.3) -> Case:
    """Extend blocks of `reqs` = (prefix, extend) cut every `bq` queries, or with `decode` = seq lens one
    block per request (q_len 1, block_size_q = stride). Candidates: every chunk of `chunk` tokens from
    `sink` up to the largest block position (or, with `subset`, a random sorted subset per block),
    followed by `pad` INVALID entries."""
    kv_dtype = kv_dtype or q_dtype
    if decode is not None:
        lens = list(decode)
        bq = stride
    else:
        lens = [p + e for p, e in reqs]
    slots = sum(lens) + 17
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 2, max_ctx=max(lens) + 3, num_slots=slots, generator=gen)
    row, q_start, q_len, pos = [], [], [], []
    if decode is not None:
        for i, (r, n) in enumerate(zip(rows, lens)):
            row.append(r), q_start.append(i), q_len.append(1), pos.append(n - 1)
    else:
        start = 0
        for r, (pre, ext) in zip(rows, reqs):
            for j in range(0, ext, bq):
                row.append(r), q_start.append(start + j), q_len.append(min(bq, ext - j)), pos.append(pre + j)
            start += ext
    n_q = q_start[-1] + q_len[-1]
    if integer:  # small integers: every dot product is exact, so ties are exact too
        q = torch.randint(-1, 2, (n_q, heads, head_dim), generator=gen).float()
        k = torch.randint(-1, 2, (slots + 1, kv_heads, head_dim), generator=gen).float()
    else:
        q = torch.randn(n_q, heads, head_dim, generator=gen) * q_scale
        k = torch.randn(slots + 1, kv_heads, head_dim, generator=gen)
    nb = len(row)
    max_pos = max(pos)
    starts = list(range(sink, max_pos + 1, chunk)) or [sink]
    if subset:
        lists = []
        for _ in range(nb):
            keep = torch.rand(len(starts), generator=gen) < 0.6
            lists.append([s for s, kk in zip(starts, keep.tolist()) if kk])
    else:
        lists = [starts] * nb
    n = len(starts) + pad
    left = torch.full((nb, n), INVALID, dtype=torch.int64)
    for b, lst in enumerate(lists):
        left[b, : len(lst)] = torch.tensor(lst, dtype=torch.int64)
    pos_t = torch.tensor(pos)
    n_active = (left <= pos_t[:, None] - sw_scan).sum(1)
    cos, sin = rope_table(max_pos + n + sw_scan + 4, head_dim, device)
    ints = [torch.tensor(x, device=device) for x in (row, q_start, q_len, pos)]
    return Case(q.to(q_dtype).to(device), k.to(kv_dtype).to(device), table.to(device), *ints, left.to(device),
                n_active.to(device), chunk, stride, sw_scan, mode, cos, sin, bq)


def run_kernel(case: Case, config=None) -> torch.Tensor:
    from sgl.kernels.hip_prune import hip_prune_stage

    return hip_prune_stage(*case.args(), config=config)


def check_scores(out: torch.Tensor, ref: torch.Tensor, *, k: int = 4, tol: float = 1e-4, max_bad: float = 0.0,
                 min_overlap: float = 1.0) -> None:
    """-inf exactly where the reference has it; finite scores within `tol` (relative to the largest |score|
    of the block) except a fraction `max_bad` (a flipped near-tie takes another path: only allowed for
    16-bit dots on GPUs); the top-k chunk sets equal apart from exact ties (or overlap >= min_overlap)."""
    assert out.shape == ref.shape and out.dtype == torch.float32
    ref = ref.to(out.device)
    ninf = ref == float("-inf")
    assert torch.equal(out == float("-inf"), ninf), "-inf pattern differs"
    fin = ~ninf
    assert torch.isfinite(out[fin]).all()
    scale = ref.masked_fill(ninf, 0).abs().amax(1, keepdim=True).clamp_min(1.0)
    bad = ((out - ref).abs() > tol * scale) & fin
    assert bad.sum() <= max_bad * fin.sum(), f"{int(bad.sum())} of {int(fin.sum())} scores differ: " \
        f"max err {float(((out - ref).abs() * fin).nan_to_num().max())}"
    overlap = total = 0
    for b in range(ref.shape[0]):
        kk = min(k, int(fin[b].sum()))
        if kk == 0:
            continue
        r_val, r_idx = ref[b].topk(kk)
        o_idx = out[b].topk(kk).indices
        r_set, o_set = set(r_idx.tolist()), set(o_idx.tolist())
        overlap += len(r_set & o_set)
        total += kk
        if min_overlap >= 1.0:
            thr = float(r_val[-1])
            for j in r_set ^ o_set:  # only chunks tied with the k-th best may be swapped
                assert abs(float(ref[b, j]) - thr) <= tol * float(scale[b]), f"block {b}: top-{kk} sets differ"
    assert overlap >= min_overlap * total


def compare(case: Case, device: str, config=None, k: int = 4) -> torch.Tensor:
    out = run_kernel(case, config)
    ref = hip_prune_stage_ref(*case.args())
    if device == "cuda" and case.q.dtype != torch.float32:
        # 16-bit dot operands: a near-tie between the two halves may flip the bisection path
        check_scores(out, ref, k=k, tol=3e-2, max_bad=0.1, min_overlap=0.75)
    else:
        check_scores(out, ref, k=k)
    return out


# ---------------------------------------------------------------- small shapes (interpreter or GPU)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(8, 2, 64), (6, 3, 32)])
@pytest.mark.parametrize("chunk,stride", [(1, 1), (8, 4), (32, 4), (32, 1)])
def test_prune_matches_reference(device, gen, mode, heads, kv_heads, head_dim, chunk, stride):
    # blocks: full (16), odd partial (7), a block whose chunks are all in its future (pos 3: n_active 0)
    case = make_case(device, gen, mode=mode, heads=heads, kv_heads=kv_heads, head_dim=head_dim, chunk=chunk,
                     stride=stride, subset=chunk == 1)
    out = compare(case, device)
    assert bool((case.n_active == 0).any()) and bool((case.q_len < case.bq).any())
    assert torch.isfinite(out).any()


@pytest.mark.parametrize("q_dtype,kv_dtype", [
    (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16), (torch.bfloat16, torch.float8_e4m3fn),
    (torch.float16, torch.float8_e5m2), (torch.float32, torch.float8_e4m3fn),
])
@pytest.mark.parametrize("mode", [ROPE_STREAMING, ROPE_RELATIVE])
def test_prune_16bit_queries_and_fp8_pools(device, gen, q_dtype, kv_dtype, mode):
    # the reference reads the same rounded q / fp8 keys (as float32)
    case = make_case(device, gen, mode=mode, q_dtype=q_dtype, kv_dtype=kv_dtype, chunk=8, stride=4)
    compare(case, device)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride,chunk", [(1, 8), (4, 32)])
def test_prune_decode_blocks(device, gen, mode, stride, chunk):
    # one query per block, block_size_q = stride_q: one pooled row (averaged over the one valid query)
    case = make_case(device, gen, mode=mode, decode=[90, 41, 7, 130], stride=stride, chunk=chunk, sw_scan=5,
                     heads=6, kv_heads=3, head_dim=32, q_dtype=torch.bfloat16)
    assert case.bq == stride and bool((case.q_len == 1).all())
    compare(case, device)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kv_heads", [3, 1])
def test_prune_one_row_blocks_of_several_queries(device, gen, mode, kv_heads):
    # block_size_q == stride_q: the one-row kernel, here with full and partial blocks of 4 queries (each
    # query rotated before the mean in streaming mode), KV heads not a power of two, random subsets
    # padded with INVALID and 2-chunk programs (many of them all padding: early exit)
    from sgl.kernels.hip_prune import PruneConfig

    case = make_case(device, gen, mode=mode, heads=6, kv_heads=kv_heads, head_dim=32, chunk=8, stride=4, bq=4,
                     reqs=((70, 10), (3, 5), (150, 3)), subset=True, pad=9)
    assert case.bq == case.stride and int(case.q_len.max()) == 4 and int(case.q_len.min()) < 4
    row = compare(case, device, config=PruneConfig(row_chunks=2, row_warps=1))
    general = run_kernel(case, PruneConfig(one_row_kernel=False, block_chunk=16, block_r=16, num_warps=1))
    if case.q.dtype == torch.float32 and device != "cuda":
        assert torch.allclose(row, general, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.isfinite(row), torch.isfinite(general))


@pytest.mark.parametrize("chunk", [8, 32])
def test_prune_one_row_exact_ties_go_left(device, gen, chunk):
    case = make_case(device, gen, mode=ROPE_NONE, integer=True, heads=4, kv_heads=2, head_dim=32, chunk=chunk,
                     decode=[90, 60, 33], stride=4)
    out = run_kernel(case)
    assert torch.equal(out, hip_prune_stage_ref(*case.args()).to(out.device))


@pytest.mark.parametrize("mode", MODES)
def test_prune_padded_lists_and_tiles(device, gen, mode):
    # sorted random subsets padded with INVALID, 16-chunk tiles (several tiles, the trailing ones all
    # padding: early exit) and 16-row tiles (G * rows = 4 * 16 = 64 rows: four row tiles per KV head)
    from sgl.kernels.hip_prune import PruneConfig

    case = make_case(device, gen, mode=mode, chunk=4, stride=1, subset=True, pad=45,
                     reqs=((100, 16), (2, 9), (40, 5)))
    if mode == ROPE_STREAMING:  # other index dtypes: int64 block table, int32 lists and block vectors
        case.table = case.table.long()
    elif mode == ROPE_RELATIVE:
        case.left, case.n_active, case.pos, case.q_len = (
            t.int() for t in (case.left, case.n_active, case.pos, case.q_len))
    cfg = PruneConfig(block_chunk=16, block_r=16, num_warps=4)
    out = compare(case, device, config=cfg)
    n = case.left.shape[1]
    assert n > 64 and bool((case.n_active < n - 16).all())
    assert bool((out[:, -16:] == float("-inf")).all())
    # padding entries and chunks past p_min - sw_scan score -inf
    act = (case.left <= case.pos[:, None] - case.sw_scan)
    assert torch.equal(torch.isfinite(out), act)


def test_prune_no_active_chunk_anywhere(device, gen):
    case = make_case(device, gen, mode=ROPE_STREAMING, reqs=((0, 16), (1, 3)), sw_scan=20)
    assert int(case.n_active.sum()) == 0
    out = run_kernel(case)
    assert bool((out == float("-inf")).all())


@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("chunk", [8, 32])
def test_prune_exact_ties_go_left(device, gen, stride, chunk):
    # integer q and k (full blocks, so the averages are exact too): branch scores tie often and exactly;
    # the kernel must break ties to the left like the reference and give bit-identical scores
    case = make_case(device, gen, mode=ROPE_NONE, integer=True, heads=4, kv_heads=2, head_dim=32, chunk=chunk,
                     stride=stride, reqs=((60, 32), (90, 16)))
    out = run_kernel(case)
    ref = hip_prune_stage_ref(*case.args())
    assert torch.equal(out, ref.to(out.device))


def test_prune_empty_inputs(device, gen):
    case = make_case(device, gen, mode=ROPE_NONE)
    case.left = case.left[:, :0]
    assert run_kernel(case).shape == (case.left.shape[0], 0)


def test_prune_rejects_bad_arguments(device, gen):
    from sgl.kernels.hip_prune import hip_prune_stage

    case = make_case(device, gen, mode=ROPE_RELATIVE)
    good = list(case.args())
    names = ["q", "k_buf", "block_table", "blk_row", "blk_q_start", "blk_q_len", "blk_pos", "left", "n_active",
             "chunk_size", "stride_q", "sw_scan", "rope_mode", "cos", "sin", "block_size_q"]

    def bad(name, value, match=None):
        args = list(good)
        args[names.index(name)] = value
        with pytest.raises(ValueError, match=match or name):
            hip_prune_stage(*args)

    bad("k_buf", case.k_buf[:, :, :32])
    bad("k_buf", torch.zeros(4, 3, 64, device=device))  # 8 heads over 3 KV heads
    bad("block_table", case.table.float())
    bad("left", case.left[0])
    bad("blk_pos", case.pos[:-1])
    bad("n_active", case.n_active.float())
    bad("chunk_size", 0)
    bad("stride_q", 0)
    bad("block_size_q", 6)  # not a multiple of stride 4
    bad("rope_mode", 3)
    bad("cos", case.cos[:, :16])
    bad("sin", None)
    bad("q", case.q.to(torch.int32))
    bad("left", case.left.t().contiguous().t(), match="left")  # last dim not contiguous


# ---------------------------------------------------------------- sm_90 code generation (no GPU needed)

_CODEGEN = r"""
import json, os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sgl.kernels import hip_prune as hp
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
cfg = hp.default_prune_config(128)
res = {}
for name, kv, group, rows, stride, iters, mode in json.loads(sys.argv[1]):
    fn = hp._hip_prune_row_kernel if name.startswith("row_") else hp._hip_prune_kernel
    ptrs = dict(Q="*bf16", K=kv, Table="*i32", BlkRow="*i64", BlkQStart="*i64", BlkQLen="*i64", BlkPos="*i64",
                Left="*i64", NActive="*i64", Cos="*fp32", Sin="*fp32", Out="*fp32")
    sig = {n: ptrs.get(n, "i32") for n in fn.arg_names}
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
    aligned = ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_cos", "stride_sin")
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(sig.items())
             if t.startswith("*") or n in aligned}
    if fn is hp._hip_prune_row_kernel:
        chunks = cfg.row_chunks_fp8 if "fp8" in kv else cfg.row_chunks
        ce = dict(HALF_DIM=64, KV_HEADS=8, GROUP=group, STRIDE_Q=stride, N_ITERS=iters, ROPE_MODE=mode,
                  INVALID_POS=1 << 30, ROW_CHUNKS=chunks, BLOCK_KVH=8, BLOCK_HD=64)
        opts = {"num_warps": cfg.row_warps, "num_stages": 1}
    else:
        ce = dict(HALF_DIM=64, GROUP=group, ROWS=rows, STRIDE_Q=stride, N_ITERS=iters, ROPE_MODE=mode,
                  INVALID_POS=1 << 30, BLOCK_CHUNK=cfg.block_chunk, BLOCK_R=min(cfg.block_r, max(16, group * rows)),
                  BLOCK_HD=64, DOT_F32=False, DOT_PRECISION="tf32")
        opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                       options=opts)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    res[name] = {op: len(re.findall(r"\b" + op + r"\b", sass)) for op in ("HGMMA", "HMMA", "LDL", "STL")}
print(json.dumps(res))
"""


def test_prune_sm90_codegen_has_no_spills():
    """Llama-3.1-8B layout (G = 4, D = 128, bf16 / fp8) compiled for sm_90 with the default config: tensor-core
    dots and no register spills, for stage 1 (streaming), stage 3 (relative, 256 rows) and a one-row block
    through the general kernel; the one-row kernel (decode: no tensor cores) has no spills in any mode."""
    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this Triton build ships no ptxas")
    builds = [("stage1_streaming", "*bf16", 4, 16, 4, 8, ROPE_STREAMING),
              ("stage3_relative", "*bf16", 4, 64, 1, 3, ROPE_RELATIVE),
              ("decode_fp8", "*fp8e4nv", 4, 1, 4, 8, ROPE_RELATIVE),
              ("row_stage1_streaming", "*bf16", 4, 1, 4, 8, ROPE_STREAMING),
              ("row_stage1_streaming_fp8", "*fp8e4nv", 4, 1, 4, 8, ROPE_STREAMING),
              ("row_stage2_relative_fp8", "*fp8e4nv", 4, 1, 4, 5, ROPE_RELATIVE),
              ("row_stage2_relative", "*bf16", 4, 1, 4, 5, ROPE_RELATIVE),
              ("row_stage3_none", "*bf16", 4, 1, 1, 3, ROPE_NONE)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _CODEGEN, json.dumps(builds)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, c in res.items():
        assert name.startswith("row_") or c["HGMMA"] + c["HMMA"] > 0, (name, c)
        assert c["LDL"] == 0 and c["STL"] == 0, (name, c)


# ---------------------------------------------------------------- GPU: Llama-3.1-8B shapes

H, KVH, D = 32, 8, 128


def _llama_case(gen, *, mode, blocks: List[Tuple[int, int]], chunk, stride, bq, sw_scan, sink, left=None,
                decode=False, kv_dtype=torch.bfloat16, ctx=None):
    """blocks: (position of the first query, queries). One request holding `ctx` tokens (scattered slots)."""
    ctx = ctx or max(p + n for p, n in blocks) + 8
    slots = ctx + 4096
    table, (r,) = R.random_req_to_token([ctx], rows=3, max_ctx=ctx + 16, num_slots=slots)
    k_buf = (torch.randn(slots + 1, KVH, D, device="cuda", generator=gen)).to(kv_dtype)
    n_q = sum(n for _, n in blocks)
    q = (torch.randn(n_q, H, D, device="cuda", generator=gen) * D ** -0.5).to(torch.bfloat16)
    starts = torch.tensor([0] + [n for _, n in blocks[:-1]]).cumsum(0)
    pos = torch.tensor([p for p, _ in blocks])
    if left is None:
        span = int(pos.max()) - sw_scan - sink
        n = max(1, span // chunk + 1)
        left = (sink + chunk * torch.arange(n))[None, :].expand(len(blocks), n).contiguous()
    n_active = (left <= pos[:, None] - sw_scan).sum(1)
    n = left.shape[1]
    cos, sin = rope_table(int(pos.max()) + n + sw_scan + bq + 8, D, "cuda")
    dev = lambda t: t.to("cuda")  # noqa: E731
    return Case(q, k_buf, dev(table), dev(torch.full((len(blocks),), r)), dev(starts),
                dev(torch.tensor([nq for _, nq in blocks])), dev(pos), dev(left), dev(n_active), chunk, stride, sw_scan,
                mode, cos, sin, bq)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
def test_gpu_llama_stage1_128k(mode):
    """Stage 1 of the 3K preset over a 128K context: chunk 256, stride 4, blocks of 64 (the last blocks of a
    128K prefill, one partial), sw_scan 768, sink 256."""
    gen = torch.Generator(device="cuda").manual_seed(7)
    T = 128 * 1024
    blocks = [(T - 256, 64), (T - 192, 64), (T - 128, 64), (T - 64, 37), (5000, 64), (900, 64)]
    case = _llama_case(gen, mode=mode, blocks=blocks, chunk=256, stride=4, bq=64, sw_scan=768, sink=256)
    out = run_kernel(case)
    ref = hip_prune_stage_ref(*case.args())
    check_scores(out, ref, k=128, tol=3e-2, max_bad=0.1, min_overlap=0.85)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", [ROPE_NONE, ROPE_RELATIVE])
@pytest.mark.parametrize("chunk,stride", [(32, 4), (8, 1)])
def test_gpu_llama_later_stages(mode, chunk, stride):
    """Stages 2 and 3: 1024 scattered candidate chunks per block (sorted, padded), fp8 pool."""
    gen = torch.Generator(device="cuda").manual_seed(11)
    T = 64 * 1024
    blocks = [(T - 128, 64), (T - 64, 64), (20000, 64), (3000, 50)]
    cpu = torch.Generator().manual_seed(3)
    rows = []
    for p, _ in blocks:
        cand = torch.randperm(max(1, (p - 768 - 256) // chunk), generator=cpu)[:1024] * chunk + 256
        cand = cand.sort().values
        rows.append(torch.cat((cand, torch.full((1024 - cand.numel(),), INVALID))))
    left = torch.stack(rows)
    case = _llama_case(gen, mode=mode, blocks=blocks, chunk=chunk, stride=stride, bq=64, sw_scan=768, sink=256,
                       left=left, kv_dtype=torch.float8_e4m3fn, ctx=T + 8)
    out = run_kernel(case)
    ref = hip_prune_stage_ref(*case.args())
    check_scores(out, ref, k=256, tol=3e-2, max_bad=0.1, min_overlap=0.85)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
def test_gpu_llama_decode_blocks(mode):
    """Decode refresh of stage 1: 8 requests of one query (block_size_q = stride 4), 1K..128K tokens."""
    gen = torch.Generator(device="cuda").manual_seed(5)
    lens = [1024, 4000, 9000, 30000, 65536, 100000, 128 * 1024, 1500]
    slots = sum(lens) + 64
    table, rows = R.random_req_to_token(lens, rows=len(lens) + 2, max_ctx=max(lens) + 8, num_slots=slots)
    k_buf = torch.randn(slots + 1, KVH, D, device="cuda", generator=gen).to(torch.bfloat16)
    q = (torch.randn(len(lens), H, D, device="cuda", generator=gen) * D ** -0.5).to(torch.bfloat16)
    pos = torch.tensor(lens) - 1
    chunk, sw_scan, sink = 256, 768, 256
    n = (int(pos.max()) - sw_scan - sink) // chunk + 1
    left = (sink + chunk * torch.arange(n))[None, :].expand(len(lens), n).contiguous()
    n_active = (left <= pos[:, None] - sw_scan).sum(1)
    cos, sin = rope_table(int(pos.max()) + n + sw_scan + 8, D, "cuda")
    c = lambda t: t.to("cuda")  # noqa: E731
    case = Case(q, k_buf, c(table), c(torch.tensor(rows)), c(torch.arange(len(lens))),
                c(torch.ones(len(lens), dtype=torch.long)), c(pos), c(left), c(n_active), chunk, 4, sw_scan, mode,
                cos, sin, 4)
    out = run_kernel(case)
    ref = hip_prune_stage_ref(*case.args())
    check_scores(out, ref, k=128, tol=3e-2, max_bad=0.1, min_overlap=0.85)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_llama_cost_follows_context():
    """Early exit: blocks at position 4K over a 128K-long candidate list (n = 512, all but the first
    tile inactive) cost about what the same blocks cost over their own 13-chunk list (the chunks
    with left <= 4096 - sw_scan)."""
    import time

    gen = torch.Generator(device="cuda").manual_seed(9)
    T = 128 * 1024
    blocks = [(4096, 64)] * 32
    n_long = (T - 768 - 256) // 256 + 1
    long_left = (256 + 256 * torch.arange(n_long))[None, :].expand(len(blocks), n_long).contiguous()
    case_long = _llama_case(gen, mode=ROPE_RELATIVE, blocks=blocks, chunk=256, stride=4, bq=64, sw_scan=768,
                            sink=256, left=long_left)
    active = int((case_long.left[0] <= 4096 - 768).sum())  # 13: lefts 256, 512, ..., 3328
    case_short = Case(**{**case_long.__dict__, "left": case_long.left[:, :active].contiguous()})

    def timed(case):
        run_kernel(case)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            run_kernel(case)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / 10

    out_long, out_short = run_kernel(case_long), run_kernel(case_short)
    assert torch.equal(out_long[:, :active], out_short) and bool((out_long[:, active:] == float("-inf")).all())
    t_long, t_short = timed(case_long), timed(case_short)
    assert t_long < 3 * t_short + 1e-4, (t_long, t_short)
