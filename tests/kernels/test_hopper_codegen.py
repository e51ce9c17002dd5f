"""What the GPU would run, checked without one: the hot kernels compiled for sm_90 must use
16-byte asynchronous copies (the decode kernel is bandwidth-bound: T6), tensor-core dots (wgmma
for extend, whose 8K prefill target is 400 TFLOP/s), 16-byte loads in RMSNorm, and no local
memory (register spills); fused MoE's grouped GEMMs on wgmma with asynchronous copies too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HELPER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "sgltest", "hopper_codegen.py")


@pytest.fixture(scope="module")
def sass() -> dict:
    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this Triton build ships no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, HELPER], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_decode_streams_kv_with_async_16_byte_copies(sass):
    d = sass["decode_split"]
    assert d["LDGSTS.E.BYPASS.128"] > 0 and d["LDG.E.U16"] == 0
    assert d["HMMA"] > 0 and d["local_bytes"] == 0


@pytest.mark.parametrize("build", ["extend", "extend_no_prefix"])
def test_extend_uses_wgmma_and_pipelined_loads(sass, build):
    e = sass[build]
    assert e["HGMMA"] > 0 and e["LDGSTS.E.BYPASS.128"] > 0
    assert e["local_bytes"] == 0 and e["LDL"] == 0


def test_rmsnorm_loads_16_bytes(sass):
    assert sass["rmsnorm"]["LDG.E.128"] > 0 and sass["rmsnorm"]["LDG.E.U16"] == 0


@pytest.mark.parametrize("build", ["moe_w13", "moe_w2"])
def test_fused_moe_gemms_use_wgmma_without_spills(sass, build):
    m = sass[build]
    assert m["HGMMA"] > 0 and m["LDGSTS.E.BYPASS.128"] > 0
    assert m["local_bytes"] == 0 and m["LDL"] == 0
