"""Compile the hot kernels for Hopper (sm_90) on a machine without a GPU and summarise their SASS.

Run as a script (the interpreter must be off when the kernel modules are imported, so the test
runs this in a subprocess); prints one JSON line: per kernel, the counts of the instructions that
decide its speed and the registers / local memory per thread. The launch-time specialisation the
JIT would infer on a real launch (16-byte aligned pointers, strides that are multiples of 16) is
given explicitly; req_to_token's row stride (max context + 4) and small counts are left unaligned.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
WATCH = ("HGMMA", "HMMA", "LDGSTS.E.BYPASS.128", "LDG.E.128", "LDG.E.U16", "LDL", "STL")
UNALIGNED = {"stride_r2t", "kv_group", "stride_mlh", "head_blocks", "max_splits", "qk_scale", "eps", "num_heads",
             "num_slots", "a_row_div"}


def compile_sass(fn, sig: dict, constexprs: dict, num_warps: int, num_stages: int) -> dict:
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(sig.items())
             if t != "constexpr" and n not in UNALIGNED and not t.startswith("fp")}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
        usage = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    counts = {op: len(re.findall(r"\b" + re.escape(op) + r"\b", sass)) for op in WATCH}
    counts["regs"] = int(re.search(r"REG:(\d+)", usage).group(1))
    counts["local_bytes"] = int(re.search(r"LOCAL:(\d+)", usage).group(1))
    return counts


def main() -> None:
    from sgl.kernels import decode_attention as da, extend_attention as ea, fused_moe as fm, rmsnorm as rn

    bf16_ptrs = {n: "*bf16" for n in ("Q", "K", "V", "KExt", "VExt", "Out", "KBuf", "VBuf", "X", "R", "W", "SumOut")}
    ptrs = dict(bf16_ptrs, ReqToToken="*i32", ReqPoolIdx="*i64", SeqLens="*i64", MidO="*fp32", MidLse="*fp32",
                PrefixLens="*i64", ExtendLens="*i64", StartLoc="*i64", Tiles="*i32", qk_scale="fp32", eps="fp32")
    decode_sig = {n: ptrs.get(n, "i32") for n in da._decode_split_kernel.arg_names}
    extend_sig = {n: ptrs.get(n, "i32") for n in ea._extend_kernel.arg_names}
    norm_sig = {n: ptrs.get(n, "i32") for n in rn._rmsnorm_kernel.arg_names}
    moe_ptrs = dict(A="*bf16", B="*bf16", C="*bf16", Weights="*fp32", SortedSlots="*i32", BlockExperts="*i32", NumPadded="*i32")
    moe_sig = {n: moe_ptrs.get(n, "i32") for n in fm._moe_gemm_kernel.arg_names}
    for fn, sig in ((da._decode_split_kernel, decode_sig), (ea._extend_kernel, extend_sig), (rn._rmsnorm_kernel, norm_sig),
                    (fm._moe_gemm_kernel, moe_sig)):
        for p in fn.params:
            if p.is_constexpr:
                sig[p.name] = "constexpr"
    dcfg, ecfg = da.default_decode_config(), ea.default_extend_config(128)
    moe_tiles = dict(DOT_F32=False, DOT_PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_K=64)
    out = {
        "decode_split": compile_sass(da._decode_split_kernel, decode_sig, dict(
            MIN_SPLIT=dcfg.min_split_len, BLOCK_N=dcfg.block_n, BLOCK_H=16, BLOCK_D=128, BLOCK_DV=128, DOT_F32=False,
            DOT_PRECISION="tf32"), dcfg.num_warps, dcfg.num_stages),
        "extend": compile_sass(ea._extend_kernel, extend_sig, dict(
            HEAD_DIM=128, V_HEAD_DIM=128, BLOCK_M=ecfg.block_m, BLOCK_N=ecfg.block_n, BLOCK_D=128, BLOCK_DV=128,
            DOT_F32=False, DOT_PRECISION="tf32", HAS_PREFIX=True), ecfg.num_warps, ecfg.num_stages),
        "extend_no_prefix": compile_sass(ea._extend_kernel, dict(extend_sig), dict(
            HEAD_DIM=128, V_HEAD_DIM=128, BLOCK_M=ecfg.block_m, BLOCK_N=ecfg.block_n, BLOCK_D=128, BLOCK_DV=128,
            DOT_F32=False, DOT_PRECISION="tf32", HAS_PREFIX=False), ecfg.num_warps, ecfg.num_stages),
        "rmsnorm": compile_sass(rn._rmsnorm_kernel, norm_sig, dict(HAS_RESIDUAL=True, BLOCK=4096), 8, 1),
        # the two launches of fused MoE at the prefill tile (BLOCK_M 64): w13 with SiLU-and-mul, w2 into float32
        "moe_w13": compile_sass(fm._moe_gemm_kernel, moe_sig, dict(moe_tiles, SWIGLU=True, MUL_WEIGHT=False), 4, 3),
        "moe_w2": compile_sass(fm._moe_gemm_kernel, dict(moe_sig, C="*fp32"), dict(moe_tiles, SWIGLU=False, MUL_WEIGHT=True), 4, 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
