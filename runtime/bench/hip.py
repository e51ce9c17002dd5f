"""`python -m sgl.bench_hip {kernels,passkey}`: HiP attention speed per layer and passkey quality.

kernels (GPU): one layer of the Llama-3.1-8B shape (32 q / 8 KV heads x 128, bf16), keys in a paged
pool in order, HiP's 3K preset (a non-"dense" layer: 2048 selected tokens, relative pruning RoPE):
- decode at batch 1 for each context: the per-step cost with every stage recomputed, from stage 2,
  from stage 3, and with the cached mask (sparse attention only), their average over the refresh
  schedule (16, 8, 4), beside dense decode of the same KV: torch SDPA (flash, keys contiguous) and
  the Triton split-K decode kernel (paged);
- prefill: one chunk of queries at the end of each context (mask + sparse attention), beside SDPA
  over the same keys (non-causal: the chunk sees every key; the causal part inside the chunk is a
  small share at long contexts).
Times are medians of `triton.testing.do_bench`.

passkey: the default model through sgl.Engine at each length, a pass key hidden at `--depths`
evenly spread depths of filler text; HiP (the configured preset) and, with --dense, dense attention
at the same lengths (past the trained window it needs SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Dict, List

import torch

H, KVH, D = 32, 8, 128


def _bench_ms(fn, rep: int = 100) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median"))


def bench_kernels(contexts: List[int], prefill_chunk: int, preset: str, skip_dense_prefill: bool) -> List[dict]:
    from sgl.runtime.attention.hip.config import load_hip_config
    from sgl.runtime.attention.hip.mask import QueryBlocks, block_sparse_attention, estimate_mask, rope_table_size
    from sgl.runtime.layers.rotary import get_rope
    from sgl.kernels.decode_attention import alloc_decode_scratch, decode_attention
    import torch.nn.functional as F

    cfg_all = load_hip_config(preset)
    cfg = cfg_all.layers[-1]
    dev = "cuda"
    rope = get_rope(D, D, 131072, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    rows = []
    for T in contexts:
        torch.cuda.empty_cache()
        g = torch.Generator(device=dev).manual_seed(0)
        k_buf = torch.randn(T + 1, KVH, D, device=dev, dtype=torch.bfloat16, generator=g)
        v_buf = torch.randn(T + 1, KVH, D, device=dev, dtype=torch.bfloat16, generator=g)
        table = torch.arange(1, T + 1, device=dev, dtype=torch.int32)[None, :]
        size = rope_table_size(cfg_all.layers, cfg_all.block_size_q, T)
        cos, sin = rope.cos_sin(torch.arange(size, device=dev))
        q = (torch.randn(1, H, D, device=dev, dtype=torch.bfloat16, generator=g) * D ** -0.5)
        blocks = QueryBlocks.for_decode(torch.zeros(1, dtype=torch.long, device=dev), torch.tensor([T], device=dev), T)
        n_st = len(cfg.stages)
        full = estimate_mask(q, k_buf, table, blocks, cfg, True, cos, sin)
        row = {"context": T, "preset": preset}

        def step(from_stage):
            if from_stage >= n_st:
                mask = full
            else:
                rf = torch.full((1,), from_stage, dtype=torch.long, device=dev)
                mask = estimate_mask(q, k_buf, table, blocks, cfg, True, cos, sin, from_stage=from_stage, cached=full,
                                     row_from=rf)
            return block_sparse_attention(q, k_buf, v_buf, table, blocks, mask, cfg, True, cos, sin)

        for s in range(n_st + 1):
            row[f"decode_from_stage{s + 1}_us" if s < n_st else "decode_cached_us"] = 1000 * _bench_ms(lambda: step(s))
        # schedule average: per refresh_interval[0] steps, how many start at each stage
        period = cfg_all.refresh_interval[0]
        counts = [0] * (n_st + 1)
        for t in range(period):
            st = cfg_all.refresh_stage(t)
            counts[n_st if st is None else st] += 1
        keys = [f"decode_from_stage{s + 1}_us" for s in range(n_st)] + ["decode_cached_us"]
        row["decode_schedule_avg_us"] = sum(c * row[k] for c, k in zip(counts, keys)) / period
        row["schedule_counts"] = counts
        # dense decode baselines
        kk = k_buf[1:].view(1, T, KVH, D).transpose(1, 2).repeat_interleave(H // KVH, 1)
        vv = v_buf[1:].view(1, T, KVH, D).transpose(1, 2).repeat_interleave(H // KVH, 1)
        qq = q.view(1, H, 1, D)
        row["dense_sdpa_decode_us"] = 1000 * _bench_ms(lambda: F.scaled_dot_product_attention(qq, kk, vv, scale=1.0))
        out = torch.empty(1, H, D, device=dev, dtype=torch.bfloat16)
        mid_o, mid_lse = alloc_decode_scratch(1, H, D, 64, dev)
        lens = torch.tensor([T], device=dev)
        zero = torch.zeros(1, dtype=torch.long, device=dev)
        row["dense_triton_decode_us"] = 1000 * _bench_ms(
            lambda: decode_attention(q, k_buf, v_buf, out, table, zero, lens, mid_o, mid_lse, 1.0, 64))
        del kk, vv
        # prefill: one chunk at the end of the context
        chunk = min(prefill_chunk, T)
        qp = torch.randn(chunk, H, D, device=dev, dtype=torch.bfloat16, generator=g) * D ** -0.5
        pb = QueryBlocks.for_extend([0], [T - chunk], [chunk], cfg_all.block_size_q, dev)

        def prefill():
            m = estimate_mask(qp, k_buf, table, pb, cfg, True, cos, sin)
            return block_sparse_attention(qp, k_buf, v_buf, table, pb, m, cfg, True, cos, sin)

        row["prefill_chunk"] = chunk
        row["prefill_ms"] = _bench_ms(prefill, rep=20)
        m = estimate_mask(qp, k_buf, table, pb, cfg, True, cos, sin)
        row["prefill_mask_ms"] = _bench_ms(lambda: estimate_mask(qp, k_buf, table, pb, cfg, True, cos, sin), rep=20)
        row["prefill_bsa_ms"] = _bench_ms(lambda: block_sparse_attention(qp, k_buf, v_buf, table, pb, m, cfg, True, cos, sin),
                                          rep=20)
        if not skip_dense_prefill:
            kk = k_buf[1:].view(1, T, KVH, D).transpose(1, 2)
            vv = v_buf[1:].view(1, T, KVH, D).transpose(1, 2)
            qpp = qp.view(1, chunk, H, D).transpose(1, 2)

            def dense_prefill():  # one KV head group at a time keeps the expanded keys small
                g_ = H // KVH
                for h in range(KVH):
                    F.scaled_dot_product_attention(qpp[:, h * g_:(h + 1) * g_], kk[:, h:h + 1].expand(1, g_, T, D),
                                                   vv[:, h:h + 1].expand(1, g_, T, D), scale=1.0)

            row["dense_sdpa_prefill_ms"] = _bench_ms(dense_prefill, rep=5)
        print(json.dumps(row), flush=True)
        rows.append(row)
        del k_buf, v_buf
    return rows


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def passkey_prompts(tokenizer, length: int, depths: int, seed: int = 0):
    """(prompt, key) pairs of about `length` tokens, the key at evenly spread depths."""
    rng = random.Random(seed + length)
    per = len(tokenizer.encode(FILLER))
    head = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    tail = "What is the pass key? The pass key is"
    n = max(1, (length - 60) // per)
    out = []
    for i in range(depths):
        key = rng.randint(10000, 99999)
        d = round(n * (i + 0.5) / depths)
        text = head + FILLER * d + f"The pass key is {key}. Remember it. {key} is the pass key. " + FILLER * (n - d) + tail
        out.append((text, key))
    return out


def bench_passkey(lengths: List[int], depths: int, dense: bool, hip_config, chunk: int, extra: Dict) -> List[dict]:
    import sgl
    from sgl.runtime.models.default_model import default_model_path
    from sgl.runtime.models.tokenizer import get_tokenizer

    tok = get_tokenizer(default_model_path())
    modes = [("hip", dict(enable_hip_attention=True, hip_attention_config=hip_config))]
    if dense:
        os.environ["SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"] = "1"
        modes.append(("dense", {}))
    results = []
    for name, kw in modes:
        engine = sgl.Engine(context_length=max(lengths) + 512, chunked_prefill_size=chunk, log_level="warning",
                            **kw, **extra)
        try:
            for length in lengths:
                pairs = passkey_prompts(tok, length, depths)
                t0 = time.time()
                outs = engine.generate([p for p, _ in pairs], {"max_new_tokens": 10, "temperature": 0})
                ok = [str(k) in o["text"] for (_, k), o in zip(pairs, outs)]
                row = {"mode": name, "length": length, "prompt_tokens": len(tok.encode(pairs[0][0])),
                       "correct": sum(ok), "total": len(ok), "seconds": round(time.time() - t0, 1),
                       "answers": [o["text"][:16] for o in outs]}
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            engine.shutdown()
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sgl.bench_hip", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernels", help="per-layer decode and prefill times (GPU)")
    k.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072, 1048576])
    k.add_argument("--prefill-chunk", type=int, default=32768)
    k.add_argument("--preset", default="3K")
    k.add_argument("--skip-dense-prefill", action="store_true")
    k.add_argument("--json", default=None, help="write the rows to this file")
    pk = sub.add_parser("passkey", help="passkey retrieval with the default model")
    pk.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536])
    pk.add_argument("--depths", type=int, default=10)
    pk.add_argument("--dense", action="store_true", help="also run dense attention at the same lengths")
    pk.add_argument("--hip-attention-config", default=None)
    pk.add_argument("--chunked-prefill-size", type=int, default=8192)
    pk.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cmd == "kernels":
        rows = bench_kernels(args.contexts, args.prefill_chunk, args.preset, args.skip_dense_prefill)
    else:
        rows = bench_passkey(args.lengths, args.depths, args.dense, args.hip_attention_config, args.chunked_prefill_size, {})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
