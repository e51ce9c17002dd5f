"""`python -m sgl.runtime.bench.kernels [--json PATH]`: time the Triton kernels on the GPU.

Llama-3.1-8B layout (32 q / 8 KV heads x 128), bf16, one layer. In one run it measures:
- the two ceilings: device-to-device copy bandwidth (bytes read + written) and a bf16 8192^3 matmul;
- decode attention (split-K over req_to_token) at batch x context points, T6's 64 x 4K first, in
  GB/s of KV read and as a fraction of the copy bandwidth, beside torch SDPA (flash) on the same
  K/V laid out contiguously (SDPA cannot gather: it is the no-indirection baseline). KV slots are
  a random permutation of the pool ("scattered", a fragmented server) and, for T6, also in order;
- a sweep of split counts and launch shapes at T6's point, to tune the defaults;
- extend attention: 8K causal prefill in TFLOP/s beside SDPA flash (K/V repeated to 32 heads),
  and chunked prefill over a scattered prefix;
- RMSNorm (fused residual), RoPE, SiLU-and-mul in GB/s beside their torch paths.
Every kernel output is checked against its baseline's before it is timed. Times are medians of
`triton.testing.do_bench`, which clears L2 before every run. Prints a table last; `--json`
writes every number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

H, KVH, D = 32, 8, 128
DTYPE = torch.bfloat16
DEVICE = "cuda"
DECODE_POINTS = [(64, 4096), (1, 4096), (1, 131072), (16, 32768), (160, 2048)]  # (batch, context); T6 first
EXTEND_CASES = [  # (name, prefix lens, new lens)
    ("8K causal prefill", [0], [8192]),
    ("4K chunk over 4K scattered prefix", [4096], [4096]),
    ("mixed: 2K/2K, 1K/0, 30 x 1/1K", [2048, 0] + [1024] * 30, [2048, 1024] + [1] * 30),
]
LAYER_TOKENS = 8192


def bench_ms(fn: Callable[[], object], rep: int = 200) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm()) if torch.isfinite(out).all() else float("inf")


# ---- ceilings ----------------------------------------------------------------------------------
def copy_bandwidth_gbs(gib: float = 2.0) -> float:
    n = int(gib * 2**30) // 2
    src = torch.randn(n, device=DEVICE, dtype=DTYPE)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * n * 2 / ms / 1e6  # bytes read + written


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device=DEVICE, dtype=DTYPE)
    b = torch.randn(n, n, device=DEVICE, dtype=DTYPE)
    ms = bench_ms(lambda: a @ b, rep=300)
    return 2 * n**3 / ms / 1e9


# ---- decode ------------------------------------------------------------------------------------
def decode_inputs(bs: int, ctx: int, scattered: bool) -> Dict[str, torch.Tensor]:
    """Pool of bs*ctx tokens (+ dummy slot 0), q, and req_to_token rows (random slot permutation or
    in order)."""
    n = bs * ctx
    order = torch.randperm(n, device=DEVICE) if scattered else torch.arange(n, device=DEVICE)
    return dict(
        q=torch.randn(bs, H, D, device=DEVICE, dtype=DTYPE),
        k_buf=torch.randn(n + 1, KVH, D, device=DEVICE, dtype=DTYPE),
        v_buf=torch.randn(n + 1, KVH, D, device=DEVICE, dtype=DTYPE),
        table=(order + 1).to(torch.int32).view(bs, ctx),
        idx=torch.arange(bs, device=DEVICE),
        seq=torch.full((bs,), ctx, device=DEVICE, dtype=torch.int64),
    )


def run_decode(inp: Dict[str, torch.Tensor], splits: int, cfg=None) -> Callable[[], torch.Tensor]:
    from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention

    bs = inp["q"].shape[0]
    out = torch.empty_like(inp["q"])
    mid_o, mid_lse = alloc_decode_scratch(bs, H, D, splits, DEVICE)

    def fn():
        return decode_attention(inp["q"], inp["k_buf"], inp["v_buf"], out, inp["table"], inp["idx"], inp["seq"],
                                mid_o, mid_lse, D**-0.5, splits, cfg)

    return fn


def sdpa_decode(inp: Dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """SDPA over contiguous K/V [bs, KVH, ctx, D]; the query heads of a KV group become a length-4
    query sequence, so no K/V is repeated."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    bs, ctx = inp["table"].shape
    slots = inp["table"].long()
    k = inp["k_buf"][slots].permute(0, 2, 1, 3).contiguous()
    v = inp["v_buf"][slots].permute(0, 2, 1, 3).contiguous()
    q = inp["q"].view(bs, KVH, H // KVH, D)

    def fn():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, scale=D**-0.5).reshape(bs, H, D)

    return fn


def decode_bytes(bs: int, ctx: int) -> int:
    return bs * ctx * KVH * D * 2 * 2 + 2 * bs * H * D * 2  # K and V once; q in, out


def bench_decode_point(bs: int, ctx: int, splits: int, copy_gbs: float, scattered: bool = True) -> Dict:
    inp = decode_inputs(bs, ctx, scattered)
    ours, base = run_decode(inp, splits), sdpa_decode(inp)
    err = rel_err(ours(), base())
    ms, base_ms = bench_ms(ours), bench_ms(base)
    gbs = decode_bytes(bs, ctx) / ms / 1e6
    del inp
    torch.cuda.empty_cache()
    return dict(kind="decode", bs=bs, ctx=ctx, layout="scattered" if scattered else "in order", splits=splits,
                ms=ms, gbs=gbs, pct_copy=100 * gbs / copy_gbs, sdpa_ms=base_ms,
                sdpa_gbs=decode_bytes(bs, ctx) / base_ms / 1e6, rel_err_vs_sdpa=err)


def sweep_decode(bs: int, ctx: int, copy_gbs: float) -> List[Dict]:
    """Split counts and launch shapes at one point: what the defaults should be."""
    from sgl.kernels.decode_attention import DecodeConfig

    inp = decode_inputs(bs, ctx, scattered=True)
    rows = []
    for splits in (4, 8, 16, 32):
        for block_n, warps, stages in ((32, 4, 2), (64, 4, 1), (64, 4, 2), (64, 4, 3), (64, 8, 2), (128, 8, 2)):
            for min_split in (128, 512):
                cfg = DecodeConfig(block_n=block_n, num_warps=warps, num_stages=stages, min_split_len=min_split)
                try:
                    ms = bench_ms(run_decode(inp, splits, cfg), rep=100)
                except Exception as exc:  # a shape that does not compile (e.g. shared memory) is a result too
                    rows.append(dict(kind="decode_sweep", splits=splits, config=str(cfg), error=repr(exc)[:200]))
                    continue
                gbs = decode_bytes(bs, ctx) / ms / 1e6
                rows.append(dict(kind="decode_sweep", bs=bs, ctx=ctx, splits=splits, config=str(cfg), ms=ms, gbs=gbs,
                                 pct_copy=100 * gbs / copy_gbs))
    del inp
    torch.cuda.empty_cache()
    return rows


# ---- extend ------------------------------------------------------------------------------------
def extend_flops(prefix: List[int], extend: List[int]) -> float:
    """Two matmuls (QK^T, PV) of 2*D flops per (query head, visible key) pair; query i of a request
    sees prefix + i + 1 keys."""
    pairs = sum(e * p + e * (e + 1) / 2 for p, e in zip(prefix, extend))
    return 4.0 * D * H * pairs


def extend_inputs(prefix: List[int], extend: List[int]) -> Dict:
    from sgl.kernels.extend_attention import default_extend_config, plan_extend_tiles

    total = [p + e for p, e in zip(prefix, extend)]
    slots = sum(total)
    perm = (torch.randperm(slots, device=DEVICE) + 1).to(torch.int32)
    table = torch.zeros(len(total), max(total), dtype=torch.int32, device=DEVICE)
    start = 0
    for i, n in enumerate(total):
        table[i, :n] = perm[start : start + n]
        start += n
    t = sum(extend)
    cfg = default_extend_config(D)
    ext = torch.tensor(extend, device=DEVICE)
    return dict(
        q=torch.randn(t, H, D, device=DEVICE, dtype=DTYPE), k=torch.randn(t, KVH, D, device=DEVICE, dtype=DTYPE),
        v=torch.randn(t, KVH, D, device=DEVICE, dtype=DTYPE),
        k_buf=torch.randn(slots + 1, KVH, D, device=DEVICE, dtype=DTYPE),
        v_buf=torch.randn(slots + 1, KVH, D, device=DEVICE, dtype=DTYPE),
        table=table, idx=torch.arange(len(total), device=DEVICE), prefix=torch.tensor(prefix, device=DEVICE),
        ext=ext, starts=torch.cumsum(ext, 0) - ext, cfg=cfg,
        tiles=plan_extend_tiles(extend, prefix, cfg.block_m, DEVICE),
    )


def run_extend(inp: Dict, cfg=None) -> Callable[[], torch.Tensor]:
    """The extend kernel on `inp`, with its default launch shape or `cfg` (tiles re-planned for it)."""
    from sgl.kernels.extend_attention import extend_attention, plan_extend_tiles

    cfg = cfg or inp["cfg"]
    tiles = inp["tiles"] if cfg == inp["cfg"] else plan_extend_tiles(
        inp["ext"].tolist(), inp["prefix"].tolist(), cfg.block_m, DEVICE)
    out = torch.empty_like(inp["q"])

    def fn():
        return extend_attention(inp["q"], inp["k"], inp["v"], out, inp["k_buf"], inp["v_buf"], inp["table"],
                                inp["idx"], inp["prefix"], inp["ext"], inp["starts"], tiles, D**-0.5, cfg)

    return fn


def sweep_extend(prefix: List[int], extend: List[int], mm_tflops: float) -> List[Dict]:
    """Launch shapes of the extend kernel at one point (each checked against the default's output)."""
    from sgl.kernels.extend_attention import ExtendConfig

    inp = extend_inputs(prefix, extend)
    want = run_extend(inp)().clone()
    rows = []
    for bm, bn, warps, stages in ((128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 1),
                                  (128, 32, 4, 3),
                                  (64, 64, 4, 3), (128, 64, 4, 3)):
        cfg = ExtendConfig(block_m=bm, block_n=bn, num_warps=warps, num_stages=stages)
        try:
            fn = run_extend(inp, cfg)
            err = rel_err(fn(), want)
            ms = bench_ms(fn, rep=100)
        except Exception as exc:  # e.g. out of shared memory: recorded, not fatal
            rows.append(dict(kind="extend_sweep", config=str(cfg), error=repr(exc)[:200]))
            continue
        tflops = extend_flops(prefix, extend) / ms / 1e9
        rows.append(dict(kind="extend_sweep", prefix=prefix, extend=extend, config=str(cfg), ms=ms, tflops=tflops,
                         pct_matmul=100 * tflops / mm_tflops, rel_err_vs_default=err))
    del inp
    torch.cuda.empty_cache()
    return rows


def sdpa_prefill(inp: Dict) -> Callable[[], torch.Tensor]:
    """One request, no prefix: SDPA flash causal on [1, H, S, D] with K/V repeated per query head."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = inp["q"].transpose(0, 1).unsqueeze(0)
    k = inp["k"].repeat_interleave(H // KVH, dim=1).transpose(0, 1).unsqueeze(0).contiguous()
    v = inp["v"].repeat_interleave(H // KVH, dim=1).transpose(0, 1).unsqueeze(0).contiguous()

    def fn():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=D**-0.5)[0].transpose(0, 1)

    return fn


def bench_extend_point(name: str, prefix: List[int], extend: List[int], mm_tflops: float) -> Dict:
    inp = extend_inputs(prefix, extend)
    ours = run_extend(inp)
    row = dict(kind="extend", case=name, prefix=prefix, extend=extend)
    if not any(prefix) and len(extend) == 1:
        base = sdpa_prefill(inp)
        row["rel_err_vs_sdpa"] = rel_err(ours(), base())
        row["sdpa_ms"] = bench_ms(base)
        row["sdpa_tflops"] = extend_flops(prefix, extend) / row["sdpa_ms"] / 1e9
    else:
        from sgl.kernels.reference import extend_attention_ref

        small = ours()[: min(256, inp["q"].shape[0])]  # spot-check the first rows against the oracle
        ref = extend_attention_ref(inp["q"], inp["k"], inp["v"], inp["k_buf"], inp["v_buf"], inp["table"], inp["idx"],
                                   inp["prefix"], inp["ext"], D**-0.5)[: small.shape[0]]
        row["rel_err_vs_oracle_first_rows"] = rel_err(small, ref)
    row["ms"] = bench_ms(ours)
    row["tflops"] = extend_flops(prefix, extend) / row["ms"] / 1e9
    row["pct_matmul"] = 100 * row["tflops"] / mm_tflops
    del inp
    torch.cuda.empty_cache()
    return row


# ---- elementwise layers ------------------------------------------------------------------------
def bench_layers(copy_gbs: float, tokens: int) -> List[Dict]:
    from sgl.kernels.rmsnorm import rmsnorm
    from sgl.kernels.rope import apply_rope
    from sgl.kernels.silu_and_mul import silu_and_mul
    from sgl.runtime.layers.activation import SiluAndMul
    from sgl.runtime.layers.layernorm import RMSNorm
    from sgl.runtime.layers.rotary import RotaryEmbedding

    os.environ["SGL_DISABLE_TRITON_KERNELS"] = "1"  # the layer modules below take their torch paths
    try:
        x = torch.randn(tokens, 4096, device=DEVICE, dtype=DTYPE)
        res = torch.randn_like(x)
        norm = RMSNorm(4096, 1e-5).to(DEVICE).to(DTYPE)
        with torch.no_grad():
            norm.weight.normal_()  # parameters are created uninitialised
        qkv = torch.randn(tokens, (H + 2 * KVH) * D, device=DEVICE, dtype=DTYPE)
        q, k, _ = qkv.split([H * D, KVH * D, KVH * D], dim=-1)
        pos = torch.randint(0, 131072, (tokens,), device=DEVICE)
        rope = RotaryEmbedding(D, D, 131072, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
        inv = rope.inv_freq(pos.device)
        gate_up = torch.randn(tokens, 2 * 14336, device=DEVICE, dtype=DTYPE)
        cases = [
            ("rmsnorm+residual", lambda: rmsnorm(x, norm.weight, 1e-5, res), lambda: norm(x, res), 4 * x.numel() * 2),
            ("rope q+k", lambda: apply_rope(pos, q, k, inv, D), lambda: rope(pos, q, k), 2 * (q.numel() + k.numel()) * 2),
            ("silu_and_mul", lambda: silu_and_mul(gate_up), lambda: SiluAndMul()(gate_up), gate_up.numel() * 3),
        ]
        rows = []
        for name, ours, base, nbytes in cases:
            errs = [rel_err(a.float(), b.float()) for a, b in zip(_as_list(ours()), _as_list(base()))]
            ms, base_ms = bench_ms(ours), bench_ms(base)
            rows.append(dict(kind="layer", case=name, tokens=tokens, ms=ms, gbs=nbytes / ms / 1e6,
                             pct_copy=100 * nbytes / ms / 1e6 / copy_gbs, torch_ms=base_ms, rel_err_vs_torch=max(errs)))
        return rows
    finally:
        os.environ.pop("SGL_DISABLE_TRITON_KERNELS", None)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (tuple, list)) else [x]


# ---- report ------------------------------------------------------------------------------------
def print_table(report: Dict) -> None:
    print(f"\n{report['device']} | torch {report['torch']} | triton {report['triton']} | {report['date']}")
    print(f"copy bandwidth {report['copy_gbs']:.0f} GB/s | bf16 matmul {report['matmul_tflops']:.0f} TFLOP/s")
    print(f"\n{'decode bs x ctx':<22}{'layout':<11}{'splits':>6}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'sdpa ms':>9}"
          f"{'sdpa GB/s':>10}{'err':>9}")
    for r in report["decode"]:
        print(f"{r['bs']:>6} x {r['ctx']:<13}{r['layout']:<11}{r['splits']:>6}{r['ms']:>9.4f}{r['gbs']:>8.0f}"
              f"{r['pct_copy']:>6.1f}%{r['sdpa_ms']:>9.4f}{r['sdpa_gbs']:>10.0f}{r['rel_err_vs_sdpa']:>9.1e}")
    best = [r for r in report["decode_sweep"] if "ms" in r]
    if best:
        top = min(best, key=lambda r: r["ms"])
        print(f"best of {len(best)} swept decode shapes at {top['bs']} x {top['ctx']}: {top['ms']:.4f} ms, "
              f"{top['pct_copy']:.1f}% of copy, splits {top['splits']}, {top['config']}")
    print(f"\n{'extend case':<34}{'ms':>9}{'TFLOP/s':>9}{'%mm':>6}{'sdpa ms':>9}{'sdpa TF/s':>10}{'err':>9}")
    for r in report["extend"]:
        err = r.get("rel_err_vs_sdpa", r.get("rel_err_vs_oracle_first_rows"))
        sd = f"{r['sdpa_ms']:>9.3f}{r['sdpa_tflops']:>10.0f}" if "sdpa_ms" in r else f"{'-':>9}{'-':>10}"
        print(f"{r['case']:<34}{r['ms']:>9.3f}{r['tflops']:>9.0f}{r['pct_matmul']:>5.0f}%{sd}{err:>9.1e}")
    swept = [r for r in report["extend_sweep"] if "ms" in r]
    if swept:
        top = min(swept, key=lambda r: r["ms"])
        print(f"best of {len(swept)} swept extend shapes at {EXTEND_CASES[0][0]}: {top['ms']:.3f} ms, "
              f"{top['tflops']:.0f} TFLOP/s, {top['config']} (err vs default {top['rel_err_vs_default']:.1e})")
    print(f"\n{'layer (' + str(LAYER_TOKENS) + ' tokens)':<22}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'torch ms':>10}{'err':>9}")
    for r in report["layers"]:
        print(f"{r['case']:<22}{r['ms']:>9.4f}{r['gbs']:>8.0f}{r['pct_copy']:>6.1f}%{r['torch_ms']:>10.4f}"
              f"{r['rel_err_vs_torch']:>9.1e}")


def run(sweep: str = "all", splits: int = 8) -> Dict:
    import triton

    torch.manual_seed(0)
    copy_gbs, mm = copy_bandwidth_gbs(), matmul_tflops()
    report = dict(device=torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, torch=torch.__version__, triton=triton.__version__,
                  date=datetime.datetime.now().isoformat(timespec="seconds"), copy_gbs=copy_gbs, matmul_tflops=mm)
    from sgl.kernels.decode_attention import decode_kv_splits

    sms = torch.cuda.get_device_properties(DEVICE).multi_processor_count
    # the split count the Triton backend picks for each batch size (decode_kv_splits)
    decode = [bench_decode_point(bs, ctx, decode_kv_splits(bs, KVH, sms, splits), copy_gbs) for bs, ctx in DECODE_POINTS]
    decode.insert(1, bench_decode_point(*DECODE_POINTS[0], splits, copy_gbs, scattered=False))
    report["decode"] = decode
    report["decode_sweep"] = sweep_decode(*DECODE_POINTS[0], copy_gbs) if sweep in ("all", "decode") else []
    report["extend"] = [bench_extend_point(name, prefix, extend, mm) for name, prefix, extend in EXTEND_CASES]
    report["extend_sweep"] = sweep_extend(*EXTEND_CASES[0][1:], mm) if sweep in ("all", "extend") else []
    report["layers"] = bench_layers(copy_gbs, LAYER_TOKENS)
    return report


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every number to this path")
    parser.add_argument("--splits", type=int, default=8, help="--triton-attention-num-kv-splits for the decode table (small batches get more: decode_kv_splits)")
    parser.add_argument("--sweep", choices=["all", "decode", "extend", "none"], default="all",
                        help="which launch-shape sweeps to run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    report = run(sweep=args.sweep, splits=args.splits)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print_table(report)


if __name__ == "__main__":
    main()
