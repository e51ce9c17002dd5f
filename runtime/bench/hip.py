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
    offload = extra.pop("enable_hip_offload", False)
    modes = [("hip+offload" if offload else "hip",
              dict(enable_hip_attention=True, hip_attention_config=hip_config, enable_hip_offload=offload))]
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


class _DecodeBatch:
    """The fields ModelRunner.build_forward_batch reads, for one request decoding (offload bench)."""

    def __init__(self, device, token: int, pos: int, slot: int):
        from sgl.runtime.executor.forward_batch import ForwardMode

        self.reqs = [None]
        self.forward_mode = ForwardMode.DECODE
        self.input_ids = torch.tensor([token], device=device)
        self.positions = torch.tensor([pos], device=device)
        self.seq_lens = [pos + 1]
        self.out_cache_loc = torch.tensor([slot], device=device)

    def req_pool_indices(self):
        return [0]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _fill_host_kv(pool, tokens: int, seed: int = 0) -> None:
    """Random K/V (normal, in the pool's dtype) in slots 1..tokens of every layer, written from the device."""
    dev = pool.k_buffer[0].device
    gen = torch.Generator(device=dev).manual_seed(seed)
    block = 1 << 16
    for layer in range(pool.layer_num):
        for buf in (pool.k_buffer[layer], pool.v_buffer[layer]):
            src = torch.randn((block,) + tuple(buf.shape[1:]), generator=gen, device=dev).to(pool.dtype)
            src = src.view(buf.dtype)
            for start in range(1, tokens + 1, block):
                n = min(block, tokens + 1 - start)
                buf[start:start + n].copy_(src[:n])
    _sync(dev)


def bench_offload(contexts: List[int], steps: int, preset: str, kv_dtype: str, mask_cache: int, sa_cache: int,
                  device_pool_upto: int, model: str = "llama-3.1-8b", load_format: str = "dummy") -> List[dict]:
    """Batch-1 decode of a Llama-3.1-8B shape (dummy weights, CUDA graphs) over a synthetic context of
    each length (random K/V written into the pool: no prefill), with the KV offloaded to host memory,
    and (up to `device_pool_upto` tokens) with the KV in GPU memory, the same weights. Per context:
    ms per token over `steps` steps (whole refresh cycles), the peak GPU memory of the decode, the
    caches' hit ratios."""
    from sgl.runtime.executor.model_runner import ModelRunner
    from sgl.runtime.server_args import ServerArgs

    top = max(contexts) + steps + 8
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    common = dict(model_path=model, load_format=load_format, enable_hip_attention=True, hip_attention_config=preset,
                  context_length=top, kv_cache_dtype=kv_dtype, max_running_requests=1, cuda_graph_bs=[1],
                  random_seed=0)
    rows = []
    runners = {"offload": ModelRunner(ServerArgs(enable_hip_offload=True, max_total_tokens=top,
                                                 hip_max_mask_cache_token_size=mask_cache,
                                                 hip_max_sa_cache_token_size=sa_cache, **common))}
    model_obj = runners["offload"].model
    fit = [c for c in contexts if c <= device_pool_upto]
    if fit:
        runners["gpu_pool"] = ModelRunner(ServerArgs(max_total_tokens=max(fit) + steps + 8,
                                                     mem_fraction_static=0.95 if cuda else None, **common),
                                          model=model_obj)
    for name, runner in runners.items():
        pool = runner.token_to_kv_pool
        filled = max(c for c in contexts if name == "offload" or c in fit)
        t0 = time.perf_counter()
        _fill_host_kv(pool, filled + steps + 1)
        fill_s = time.perf_counter() - t0
        for ctx in contexts:
            if name != "offload" and ctx not in fit:
                continue
            table = runner.req_to_token_pool.req_to_token
            table[0, :ctx + steps] = torch.arange(1, ctx + steps + 1, dtype=torch.int32, device=dev)
            backend = runner.attn_backend
            backend._size_steps([0])
            backend._steps[0] = 0  # as after a prefill: the first step recomputes every stage
            if name == "offload":
                for c in pool.mask_caches + pool.sa_caches:
                    c.clear()
                before = pool.cache_stats()
            _sync(dev)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(steps):
                batch = _DecodeBatch(dev, 1000 + i, ctx + i, ctx + 1 + i)
                t0 = time.perf_counter()
                runner.forward(batch)
                _sync(dev)
                times.append(time.perf_counter() - t0)
            row = {"pool": name, "context": ctx, "kv_dtype": kv_dtype, "steps": steps,
                   "ms_per_token": 1e3 * sum(times) / len(times),
                   "ms_per_token_after_first_cycle": 1e3 * sum(times[16:]) / max(1, len(times[16:])),
                   "max_step_ms": 1e3 * max(times), "min_step_ms": 1e3 * min(times),
                   "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                   "allocated_gpu_gib": torch.cuda.memory_allocated() / 2**30 if cuda else None,
                   "fill_s": fill_s, "device": torch.cuda.get_device_name() if cuda else "cpu"}
            if name == "offload":
                after = pool.cache_stats()
                for kind in ("mask", "sa"):
                    h = after[f"{kind}_cache_hits"] - before[f"{kind}_cache_hits"]
                    m = after[f"{kind}_cache_misses"] - before[f"{kind}_cache_misses"]
                    row[f"{kind}_hit_ratio"] = h / (h + m) if h + m else 0.0
                row["host_gib"] = pool.host_bytes() / 2**30
                row["cache_gib"] = pool.gpu_bytes() / 2**30
            print(json.dumps(row), flush=True)
            rows.append(row)
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
    pk.add_argument("--enable-hip-offload", action="store_true", help="HiP with the KV offloaded to host memory")
    pk.add_argument("--kv-cache-dtype", default="auto")
    pk.add_argument("--json", default=None)
    qa = sub.add_parser("quality", help="argmax agreement and perplexity vs dense inside the trained window")
    qa.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 6144])
    qa.add_argument("--hip-attention-config", default=None)
    qa.add_argument("--json", default=None)
    rc = sub.add_parser("recall", help="exact attention mass on HiP's keys, per layer")
    rc.add_argument("--length", type=int, default=32768)
    rc.add_argument("--hip-attention-config", default=None)
    rc.add_argument("--json", default=None)
    of = sub.add_parser("offload", help="batch-1 decode with the KV offloaded to host memory (GPU)")
    of.add_argument("--contexts", type=int, nargs="+", default=[131072, 524288, 1048576])
    of.add_argument("--steps", type=int, default=64)
    of.add_argument("--preset", default="3K")
    of.add_argument("--kv-cache-dtype", default="fp8_e5m2")
    of.add_argument("--hip-max-mask-cache-token-size", type=int, default=131072)
    of.add_argument("--hip-max-sa-cache-token-size", type=int, default=16384)
    of.add_argument("--device-pool-upto", type=int, default=524288,
                    help="also decode with the KV in GPU memory at contexts up to this length")
    of.add_argument("--model", default="llama-3.1-8b")
    of.add_argument("--load-format", default="dummy")
    of.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cmd == "offload":
        rows = bench_offload(args.contexts, args.steps, args.preset, args.kv_cache_dtype,
                             args.hip_max_mask_cache_token_size, args.hip_max_sa_cache_token_size,
                             args.device_pool_upto, args.model, args.load_format)
    elif args.cmd == "kernels":
        rows = bench_kernels(args.contexts, args.prefill_chunk, args.preset, args.skip_dense_prefill,
                             args.general_prune_kernel)
    elif args.cmd == "quality":
        rows = bench_quality(args.lengths, args.hip_attention_config)
    elif args.cmd == "recall":
        rows = bench_recall(args.length, args.hip_attention_config)
    else:
        extra = {"kv_cache_dtype": args.kv_cache_dtype}
        if args.enable_hip_offload:
            extra["enable_hip_offload"] = True
        rows = bench_passkey(args.lengths, args.depths, args.dense, args.hip_attention_config, args.chunked_prefill_size,
                             extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
