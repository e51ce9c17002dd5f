"""`python -m sgl.bench_hip {kernels,passkey,quality,recall}`: HiP attention speed and quality.

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

quality: teacher-forced over a long text inside the trained window (2K-6K), the share of positions
where HiP's argmax next token equals dense's, and both perplexities.

recall: with the default model's own q and k at one length (32K), the share of the exact attention
mass that falls on HiP's keys (sink + selected + window), per layer.

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
from typing import Dict, List, Optional

import torch

H, KVH, D = 32, 8, 128


def _bench_ms(fn, rep: int = 100) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median"))


def _graph_us(fn) -> Optional[float]:
    """Median replay time (us) of `fn` captured in a CUDA graph; None if it cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # a host sync inside: report it, keep the eager figures
        print(f"graph capture failed: {type(e).__name__}: {e}", flush=True)
        return None
    return 1000 * _bench_ms(graph.replay)


def bench_kernels(contexts: List[int], prefill_chunk: int, preset: str, skip_dense_prefill: bool,
                  general_prune_kernel: bool = False) -> List[dict]:
    """Per-layer decode (eager and CUDA-graph replay, per refresh stage) and prefill timings.
    `general_prune_kernel`: decode pruning through the general (tensor-core) kernel instead of the
    one-row kernel, the way it ran before that kernel existed (a before/after in one session)."""
    import dataclasses

    from sgl.kernels import hip_prune

    default = hip_prune.default_prune_config
    if general_prune_kernel:
        hip_prune.default_prune_config = lambda *a, **kw: dataclasses.replace(default(*a, **kw), one_row_kernel=False)
    try:
        return _bench_kernels(contexts, prefill_chunk, preset, skip_dense_prefill, general_prune_kernel)
    finally:
        hip_prune.default_prune_config = default


def _bench_kernels(contexts, prefill_chunk, preset, skip_dense_prefill, general_prune_kernel) -> List[dict]:
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
        row = {"context": T, "preset": preset, "prune_kernel": "general" if general_prune_kernel else "one-row"}

        def step(from_stage):
            if from_stage >= n_st:
                mask = full
            else:
                rf = torch.full((1,), from_stage, dtype=torch.long, device=dev)
                mask = estimate_mask(q, k_buf, table, blocks, cfg, True, cos, sin, from_stage=from_stage, cached=full,
                                     row_from=rf)
            return block_sparse_attention(q, k_buf, v_buf, table, blocks, mask, cfg, True, cos, sin)

        keys = [f"decode_from_stage{s + 1}_us" for s in range(n_st)] + ["decode_cached_us"]
        for s, key in enumerate(keys):
            row[key] = 1000 * _bench_ms(lambda: step(s))
            # what the server runs: the same step captured in a CUDA graph (no launch time)
            row[key.replace("decode_", "decode_graph_")] = _graph_us(lambda: step(s))
        # schedule average: per refresh_interval[0] steps, how many start at each stage
        period = cfg_all.refresh_interval[0]
        counts = [0] * (n_st + 1)
        for t in range(period):
            st = cfg_all.refresh_stage(t)
            counts[n_st if st is None else st] += 1
        row["decode_schedule_avg_us"] = sum(c * row[k] for c, k in zip(counts, keys)) / period
        graph_keys = [k.replace("decode_", "decode_graph_") for k in keys]
        if all(row[k] is not None for k in graph_keys):
            row["decode_graph_schedule_avg_us"] = sum(c * row[k] for c, k in zip(counts, graph_keys)) / period
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


def long_text_ids(tokenizer, n: int) -> List[int]:
    """A long English text with no network: this repository's docs, repeated if short."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
    parts = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if name.endswith(".md"):
                with open(os.path.join(root, name)) as f:
                    parts.append(f.read())
    text = "\n\n".join(parts) or FILLER * 2000
    ids = tokenizer.encode(text)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def bench_quality(lengths: List[int], hip_config) -> List[dict]:
    """Teacher-forced over a long text inside the trained window: per position, does HiP's argmax
    next token equal dense's, and the perplexity of the text under each."""
    import math

    import sgl
    from sgl.runtime.models.default_model import default_model_path
    from sgl.runtime.models.tokenizer import get_tokenizer

    tok = get_tokenizer(default_model_path())
    per_mode = {}
    for name, kw in (("hip", dict(enable_hip_attention=True, hip_attention_config=hip_config)), ("dense", {})):
        engine = sgl.Engine(context_length=max(lengths) + 64, log_level="warning", **kw)
        try:
            for length in lengths:
                ids = long_text_ids(tok, length)
                out = engine.generate(input_ids=ids, sampling_params={"max_new_tokens": 1, "temperature": 0},
                                      return_logprob=True, logprob_start_len=0, top_logprobs_num=1)
                meta = out["meta_info"]
                lps = [x[0] for x in meta["input_token_logprobs"][1:]]
                top = [t[0][1] if t else None for t in meta["input_top_logprobs"][1:]]
                per_mode[(name, length)] = (lps, top)
        finally:
            engine.shutdown()
    rows = []
    for length in lengths:
        (hl, ht), (dl, dt) = per_mode[("hip", length)], per_mode[("dense", length)]
        agree = sum(a == b for a, b in zip(ht, dt)) / max(1, len(dt))
        ppl_h, ppl_d = math.exp(-sum(hl) / len(hl)), math.exp(-sum(dl) / len(dl))
        row = {"length": length, "argmax_agreement": round(agree, 4), "ppl_hip": round(ppl_h, 3),
               "ppl_dense": round(ppl_d, 3), "ppl_ratio": round(ppl_h / ppl_d, 4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bench_recall(length: int, hip_config, queries: int = 64) -> List[dict]:
    """Share of the exact attention mass (dense softmax, keys at their true positions) that falls on
    HiP's keys (sink + selected + window), for the last `queries` queries of a `length`-token text,
    per layer, with the default model's own q and k."""
    from sgl.kernels.hip_reference import rope_rows
    from sgl.runtime.attention.hip.mask import QueryBlocks, estimate_mask
    from sgl.runtime.executor.model_runner import ModelRunner, throwaway_extend
    from sgl.runtime.models.tokenizer import get_tokenizer
    from sgl.runtime.server_args import ServerArgs

    sa = ServerArgs(enable_hip_attention=True, hip_attention_config=hip_config, context_length=length + 64,
                    max_total_tokens=length + 256, chunked_prefill_size=length, log_level="warning")
    runner = ModelRunner(sa)
    backend = runner.attn_backend
    ids = torch.tensor(long_text_ids(get_tokenizer(sa.model_path), length))
    rows = []
    orig = backend.forward_extend

    def probe(q, k, v, layer, fb):
        out = orig(q, k, v, layer, fb)
        qs, k_buf, _, table = backend._inputs(q, layer, fb)
        cfg = backend.config.layer(layer.layer_id)
        cos, sin = backend.rope_table(qs.device)
        bq = backend.config.block_size_q
        first = length - queries
        blocks = QueryBlocks.for_extend([fb.req_pool_indices_cpu[0]], [first], [queries], bq, qs.device)
        qq = qs[first:]
        mask = estimate_mask(qq, k_buf, table, blocks, cfg, backend.config.using_extend, cos, sin)
        slots = table[fb.req_pool_indices_cpu[0], :length].long()
        keys = k_buf[slots].float()
        pos = torch.arange(length, device=qs.device)
        c, s_ = backend.rotary.cos_sin(pos)
        if backend.config.using_extend:
            keys = rope_rows(keys, pos[:, None].expand(length, keys.shape[1]), c, s_)
            qr = rope_rows(qq.float(), pos[first:, None].expand(queries, qq.shape[1]), c, s_)
        else:
            qr = qq.float()
        group = qr.shape[1] // keys.shape[1]
        scores = torch.einsum("qhd,khd->hqk", qr, keys.repeat_interleave(group, 1))
        qpos = pos[first:]
        scores = scores.masked_fill(pos[None, None, :] > qpos[None, :, None], float("-inf"))
        probs = scores.softmax(-1)
        attended = torch.zeros(queries, length, dtype=torch.bool, device=qs.device)
        win = (pos[None, :] > qpos[:, None] - cfg.sliding_window_size) & (pos[None, :] <= qpos[:, None])
        far = pos[None, :] <= qpos[:, None] - cfg.sliding_window_size
        chosen = torch.zeros(length, dtype=torch.bool, device=qs.device)
        chosen[: cfg.sink_token_size] = True
        for b in range(mask.starts.shape[0]):
            for st in mask.starts[b, : int(mask.ks[b])].tolist():
                chosen[st: st + cfg.block_k] = True
        attended = win | (far & chosen[None, :])
        recall = float((probs * attended[None]).sum(-1).mean())
        rows.append({"layer": layer.layer_id, "recall": round(recall, 4), "selected_tokens": int(mask.ks.max()) * cfg.block_k})
        return out

    backend.forward_extend = probe
    with torch.inference_mode():
        throwaway_extend(runner, [length], [0], input_ids=ids)
    for r in rows:
        print(json.dumps(r), flush=True)
    mean = sum(r["recall"] for r in rows) / len(rows)
    print(json.dumps({"length": length, "mean_recall": round(mean, 4), "min_recall": min(r["recall"] for r in rows)}))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sgl.bench_hip", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernels", help="per-layer decode and prefill times (GPU)")
    k.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072, 1048576])
    k.add_argument("--prefill-chunk", type=int, default=32768)
    k.add_argument("--preset", default="3K")
    k.add_argument("--skip-dense-prefill", action="store_true")
    k.add_argument("--general-prune-kernel", action="store_true",
                   help="decode pruning through the general kernel (the figures before the one-row kernel)")
    k.add_argument("--json", default=None, help="write the rows to this file")
    pk = sub.add_parser("passkey", help="passkey retrieval with the default model")
    pk.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536])
    pk.add_argument("--depths", type=int, default=10)
    pk.add_argument("--dense", action="store_true", help="also run dense attention at the same lengths")
    pk.add_argument("--hip-attention-config", default=None)
    pk.add_argument("--chunked-prefill-size", type=int, default=8192)
    pk.add_argument("--json", default=None)
    qa = sub.add_parser("quality", help="argmax agreement and perplexity vs dense inside the trained window")
    qa.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 6144])
    qa.add_argument("--hip-attention-config", default=None)
    qa.add_argument("--json", default=None)
    rc = sub.add_parser("recall", help="exact attention mass on HiP's keys, per layer")
    rc.add_argument("--length", type=int, default=32768)
    rc.add_argument("--hip-attention-config", default=None)
    rc.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cmd == "kernels":
        rows = bench_kernels(args.contexts, args.prefill_chunk, args.preset, args.skip_dense_prefill,
                             args.general_prune_kernel)
    elif args.cmd == "quality":
        rows = bench_quality(args.lengths, args.hip_attention_config)
    elif args.cmd == "recall":
        rows = bench_recall(args.length, args.hip_attention_config)
    else:
        rows = bench_passkey(args.lengths, args.depths, args.dense, args.hip_attention_config, args.chunked_prefill_size, {})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
