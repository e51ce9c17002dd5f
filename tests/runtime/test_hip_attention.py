"""HiP attention on CPU: configuration, the references' semantics (dense equivalence, compacted
positions, pruning finds planted keys), the decode refresh schedule, and the backend end to end on
the default model through the scheduler (greedy equal to dense where HiP covers every key)."""

from __future__ import annotations

import json

import pytest
import torch

from sgl.kernels import reference as R
from sgl.kernels.hip_reference import INVALID, ROPE_NONE, ROPE_RELATIVE, hip_bsa_ref, hip_prune_stage_ref, rope_rows
from sgl.runtime.attention.hip.config import PRESETS, load_hip_config, parse_hip_config
from sgl.runtime.attention.hip.mask import QueryBlocks, block_sparse_attention, estimate_mask
from sgl.runtime.server_args import ServerArgs
from sgltest.runtime_helpers import run_all, submit


def _stage(chunk, k, stride=1, bq=16):
    return {"stage_block_size_q": bq, "stage_block_stride_q": stride, "stage_chunk_size": chunk, "stage_k": k}


def small_config(window=32, sink=8, second_k=64, bq=16, refresh=(4, 2, 1), extend=True, keeps=(128, 96)):
    """Three stages (chunks 32, 8, 4) scaled down for contexts of a few hundred tokens."""
    layer = {"second_stage_k": second_k, "sliding_window_size": window, "sink_token_size": sink,
             "stages": [_stage(32, None, 2, bq), _stage(8, keeps[0], 2, bq), _stage(4, keeps[1], 1, bq)]}
    return {"dense_layers": [0, 1], "block_sparse_block_size_q": bq, "mask_refresh_interval": list(refresh),
            "using_extend": extend, "layers": [layer, dict(layer, scan_extend_backend="relative")]}


# ---- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_parse(name):
    cfg = load_hip_config(name)
    assert cfg.layer(0) is cfg.layers[0] and cfg.layer(5) is cfg.layers[1]
    assert parse_hip_config(cfg.to_json()) == cfg  # round trip


def test_default_is_3k_as_published():
    cfg = load_hip_config(None)
    assert cfg.refresh_interval == (16, 8, 4) and cfg.using_extend and cfg.block_size_q == 64
    dense, other = cfg.layers
    assert (dense.second_stage_k, other.second_stage_k) == (4096, 2048)
    assert [s.chunk_size for s in other.stages] == [256, 32, 8] and other.block_k == 8
    assert (other.sink_token_size, other.sliding_window_size, other.sw_scan) == (256, 1024, 768)
    assert (dense.scan_extend_backend, other.scan_extend_backend) == ("streaming", "relative")


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "hip.json"
    path.write_text(json.dumps({"preset": "5K", "mask_refresh_interval": 8}))
    cfg = load_hip_config(str(path))
    assert cfg.refresh_interval == (8, 8, 8) and cfg.layers[1].second_stage_k == 4096


@pytest.mark.parametrize("value,words", [
    ("7K", "preset"),
    ('{"layers": []}', "layers"),
    ('{"bogus": 1}', "unknown key"),
    ('{"mask_refresh_interval": [1, 2]}', "mask_refresh_interval"),
    ('{"layers": [{"stages": [{"stage_chunk_size": 24, "stage_k": null}]}]}', "power of two"),
    ('{"layers": [{"second_stage_k": 12, "stages": [{"stage_chunk_size": 8, "stage_k": null}]}]}', "multiple"),
    ('{"layers": [{"sa_extend_backend": "dynamic_extend"}]}', "sa_extend_backend"),
    ("{not json", "not valid JSON"),
])
def test_config_errors_name_the_flag(value, words):
    with pytest.raises(ValueError) as err:
        load_hip_config(value)
    assert str(err.value).startswith("--hip-attention-config") and words in str(err.value)


def test_server_args_hip_flags():
    assert ServerArgs(enable_hip_attention=True).attention_backend == "hip"
    assert ServerArgs(enable_hip_attention=True).cuda_graph_max_bs == 32  # a graph per refresh state
    assert ServerArgs(enable_hip_attention=True, cuda_graph_max_bs=8).cuda_graph_max_bs == 8
    assert ServerArgs(attention_backend="hip").enable_hip_attention
    with pytest.raises(ValueError, match="--enable-hip-attention"):
        ServerArgs(hip_attention_config="5K")
    with pytest.raises(ValueError, match="--attention-backend torch_native"):
        ServerArgs(enable_hip_attention=True, attention_backend="torch_native")
    with pytest.raises(ValueError, match="--hip-attention-config"):
        ServerArgs(enable_hip_attention=True, hip_attention_config='{"using_extend": 1}')


def test_refresh_schedule():
    cfg = load_hip_config('{"mask_refresh_interval": [16, 8, 4]}')
    got = [cfg.refresh_stage(t) for t in range(17)]
    assert got == [0, None, None, None, 2, None, None, None, 1, None, None, None, 2, None, None, None, 0]


def test_context_past_the_trained_window_needs_hip(default_gguf, monkeypatch):
    from sgl.runtime.models.model_config import ModelConfig

    monkeypatch.delenv("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN", raising=False)
    with pytest.raises(ValueError, match="--enable-hip-attention"):
        ModelConfig.load(default_gguf, context_length=65536, device="cpu")
    assert ModelConfig.load(default_gguf, context_length=65536, device="cpu", allow_longer_context=True).context_len == 65536
    assert ModelConfig.load(default_gguf, context_length=4096, device="cpu").context_len == 4096


# ---- references ------------------------------------------------------------------------------
def _pool(gen, lens, kv_heads, dim, rows=None, slots=None):
    slots = slots or sum(lens) + 7
    table, req_rows = R.random_req_to_token(lens, rows=rows or len(lens) + 2, max_ctx=max(lens) + 3, num_slots=slots,
                                            generator=gen)
    k = torch.randn(slots + 1, kv_heads, dim, generator=gen)
    v = torch.randn(slots + 1, kv_heads, dim, generator=gen)
    return table, req_rows, k, v


def _table(dim, n=4096, base=10000.0):
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv
    return ang.cos().float(), ang.sin().float()


def _dense(q, k_buf, v_buf, table, rows, prefix, ext):
    """Causal attention of each request's new tokens over its whole KV (already in the pool)."""
    out, start = [], 0
    for row, pre, e in zip(rows, prefix, ext):
        slots = table[row, : pre + e].long()
        keys, vals = k_buf[slots], v_buf[slots]
        group = q.shape[1] // keys.shape[1]
        s = torch.einsum("qhd,khd->hqk", q[start:start + e], keys.repeat_interleave(group, 1))
        pos = torch.arange(pre, pre + e)[:, None]
        s = s.masked_fill(torch.arange(pre + e)[None, :] > pos, float("-inf"))
        out.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), vals.repeat_interleave(group, 1)))
        start += e
    return torch.cat(out)


@pytest.mark.parametrize("extend", [False, True])
def test_bsa_equals_dense_when_the_window_covers_everything(extend):
    gen = torch.Generator().manual_seed(0)
    lens, prefix = [70, 33, 129], [40, 0, 100]
    table, rows, k, v = _pool(gen, lens, 2, 32)
    ext = [n - p for n, p in zip(lens, prefix)]
    q = torch.randn(sum(ext), 6, 32, generator=gen)
    cos, sin = _table(32)
    blocks = QueryBlocks.for_extend(rows, prefix, ext, 16, "cpu")
    nb = blocks.row.shape[0]
    starts = torch.full((nb, 4), INVALID)
    out = hip_bsa_ref(q, k, v, table, blocks.row, blocks.q_start, blocks.q_len, blocks.pos, starts,
                      torch.zeros(nb, dtype=torch.long), 8, 8, 4096, extend, cos, sin, 16)
    if extend:  # window keys keep their own positions: dense over keys and queries rotated there
        k_rot, q_rot = k.clone(), q.clone()
        start = 0
        for row, pre, n in zip(rows, prefix, lens):
            slots = table[row, :n].long()
            k_rot[slots] = rope_rows(k[slots], torch.arange(n), cos, sin)
            q_rot[start:start + n - pre] = rope_rows(q[start:start + n - pre], torch.arange(pre, n), cos, sin)
            start += n - pre
        ref = _dense(q_rot, k_rot, v, table, rows, prefix, ext)
    else:
        ref = _dense(q, k, v, table, rows, prefix, ext)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_bsa_compacted_positions_are_exact_when_the_selection_is_contiguous():
    """Decode at p: sink [0, 8) + blocks covering [8, p - window] exactly: compaction gives every
    key its own position, so HiP equals dense attention over rotated keys."""
    gen = torch.Generator().manual_seed(1)
    sink, window, bk = 8, 16, 4
    n = sink + 10 * bk + window  # p - window + 1 = sink + 10 blocks
    table, rows, k, v = _pool(gen, [n], 1, 16)
    q = torch.randn(1, 2, 16, generator=gen)
    cos, sin = _table(16)
    starts = (sink + bk * torch.arange(10))[None, :]
    one = torch.ones(1, dtype=torch.long)
    out = hip_bsa_ref(q, k, v, table, torch.tensor(rows), 0 * one, one, (n - 1) * one, starts, 10 * one, bk, sink, window,
                      True, cos, sin, 1)
    slots = table[rows[0], :n].long()
    k_rot = k.clone()
    k_rot[slots] = rope_rows(k[slots], torch.arange(n), cos, sin)
    ref = _dense(rope_rows(q, torch.tensor([n - 1]), cos, sin), k_rot, v, table, rows, [n - 1], [1])
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_full_selection_equals_dense_prefill_and_decode():
    """With keep counts past the context, the pruning keeps every chunk; sink + blocks + window then
    cover every key exactly once (keys pre-rotated, no extension)."""
    gen = torch.Generator().manual_seed(2)
    cfg = parse_hip_config(small_config(window=16, sink=8, second_k=1024, extend=False, keeps=(1024, 1024))).layers[1]
    lens, prefix = [300, 211], [250, 150]
    table, rows, k, v = _pool(gen, lens, 2, 32)
    ext = [n - p for n, p in zip(lens, prefix)]
    q = torch.randn(sum(ext), 4, 32, generator=gen)
    cos, sin = _table(32)
    blocks = QueryBlocks.for_extend(rows, prefix, ext, 16, "cpu")
    mask = estimate_mask(q, k, table, blocks, cfg, False, cos, sin)
    out = block_sparse_attention(q, k, v, table, blocks, mask, cfg, False, cos, sin)
    torch.testing.assert_close(out, _dense(q, k, v, table, rows, prefix, ext), atol=2e-5, rtol=1e-4)
    # decode: one query per request at its last position
    qd = torch.randn(2, 4, 32, generator=gen)
    dblocks = QueryBlocks.for_decode(torch.tensor(rows), torch.tensor(lens), max(lens))
    mask = estimate_mask(qd, k, table, dblocks, cfg, False, cos, sin)
    out = block_sparse_attention(qd, k, v, table, dblocks, mask, cfg, False, cos, sin)
    torch.testing.assert_close(out, _dense(qd, k, v, table, rows, [n - 1 for n in lens], [1, 1]), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", [ROPE_NONE, ROPE_RELATIVE])
def test_pruning_finds_planted_keys(mode):
    """Keys aligned with the query around a few far positions (attention is local: the similarity
    fades over +-16 tokens): the block of every peak is selected."""
    gen = torch.Generator().manual_seed(3)
    n, dim = 2000, 32
    table, rows, k, v = _pool(gen, [n], 1, dim)
    k *= 0.1
    q = torch.randn(1, 2, dim, generator=gen)
    planted = [40, 777, 1234, 1500]
    slots = table[rows[0]].long()
    cos, sin = _table(dim)
    key = q[0, 0] * 3
    if mode == ROPE_RELATIVE:  # the pruning rotates the query to sw_scan + 1 = 33 and keys to 0 or 1
        key = rope_rows(key[None], torch.tensor([33]), cos, sin)[0]
    for t in planted:
        for d in range(-16, 17):
            k[slots[t + d], 0] += key * (1 - abs(d) / 20)
    raw = small_config(window=64, sink=16, second_k=32, extend=mode != ROPE_NONE)
    cfg = parse_hip_config(raw).layers[1]
    blocks = QueryBlocks.for_decode(torch.tensor(rows), torch.tensor([n]), n)
    mask = estimate_mask(q, k, table, blocks, cfg, mode != ROPE_NONE, cos, sin)
    starts = mask.starts[0, : int(mask.ks[0])].tolist()
    assert int(mask.ks[0]) == cfg.max_blocks
    for t in planted:
        assert any(s <= t < s + cfg.block_k for s in starts), (t, starts)
    # scores of the first stage: -inf exactly for chunks past the scan limit
    left = 16 + 32 * torch.arange(80)[None, :]
    nact = (left <= n - 1 - cfg.sw_scan).sum(1)
    scores = hip_prune_stage_ref(q, k, table, blocks.row, blocks.q_start, blocks.q_len, blocks.pos, left, nact, 32, 2,
                                 cfg.sw_scan, mode, cos, sin, 2)
    assert torch.isinf(scores[0, int(nact[0]):]).all() and torch.isfinite(scores[0, : int(nact[0])]).all()


# ---- backend end to end on the default model -----------------------------------------------------
@pytest.fixture(scope="module")
def long_ids(tokenizer):
    text = ("In the archive, each ledger recorded the harvests, the weather and the names of travellers. " * 12 +
            "The vault code is 4817. " + "Later entries describe repairs to the mill and the bridge. " * 10)
    return tokenizer.encode(text)


def _greedy(sched, tokenizer, prompts, n=12):
    for i, ids in enumerate(prompts):
        submit(sched, tokenizer, str(i), ids, max_new_tokens=n, temperature=0, ignore_eos=True)
    out = run_all(sched)
    return [out[str(i)]["ids"] for i in range(len(prompts))]


def _assert_same_greedy(ours, dense, on_gpu: bool):
    """float32 on CPU: equal. bf16 on a GPU, HiP's kernels and the dense ones round differently and a
    near-tie can flip a later token: the first 6 tokens must agree."""
    if not on_gpu:
        assert ours == dense
        return
    for a, b in zip(ours, dense):
        assert a[:6] == b[:6], (a, b)


def test_hip_equals_dense_when_the_window_covers_the_context(make_scheduler, tokenizer, long_ids):
    prompts = [long_ids[:400], long_ids[:150]]
    sched = make_scheduler()
    on_gpu = sched.model_runner.device == "cuda"
    dense = _greedy(sched, tokenizer, prompts)
    cfg = json.dumps(small_config(window=2048))
    hip = make_scheduler(enable_hip_attention=True, hip_attention_config=cfg)
    _assert_same_greedy(_greedy(hip, tokenizer, prompts), dense, on_gpu)
    # with chunked prefill and the radix cache reusing the first prompt's prefix
    hip = make_scheduler(enable_hip_attention=True, hip_attention_config=cfg, chunked_prefill_size=64)
    first = _greedy(hip, tokenizer, prompts)
    _assert_same_greedy(first, dense, on_gpu)
    assert _greedy(hip, tokenizer, [long_ids[:400]]) == first[:1]
    hip.check_integrity()


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def passkey_prompt(tokenizer, key: int, depth: float, n: int = 30):
    d = int(n * depth)
    text = ("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. " + FILLER * d +
            f"The pass key is {key}. Remember it. {key} is the pass key. " + FILLER * (n - d) +
            "What is the pass key? The pass key is")
    return tokenizer.encode(text)


@pytest.mark.parametrize("kv_dtype", ["auto", "fp8_e5m2"])
def test_hip_sparse_passkey_and_refresh_schedule(make_scheduler, tokenizer, kv_dtype):
    """~770-token prompts, HiP attending to 16 sink + 64 selected + 64 window tokens: the pass key
    is still retrieved at every depth (the embedded model does so densely), decode runs on the
    refresh schedule with its masks cached, and requests at different schedule points batch."""
    keys = [71433 + 2 * i for i in range(5)]
    prompts = [passkey_prompt(tokenizer, k, depth) for k, depth in zip(keys, (0.1, 0.3, 0.5, 0.7, 0.9))]
    assert min(len(p) for p in prompts) > 700
    # query blocks of 64, as in the presets: the question's last token must get a mask of its own
    cfg = json.dumps(small_config(window=64, sink=16, refresh=(8, 4, 2), bq=64))
    hip = make_scheduler(enable_hip_attention=True, hip_attention_config=cfg, kv_cache_dtype=kv_dtype)
    backend = hip.model_runner.attn_backend
    for i, ids in enumerate(prompts):
        submit(hip, tokenizer, str(i), ids, max_new_tokens=8 + i, temperature=0)
    out = run_all(hip)
    texts = [tokenizer.decode(out[str(i)]["ids"]) for i in range(5)]
    assert sum(str(k) in t for k, t in zip(keys, texts)) >= 4, texts
    store = backend._cache[5]
    assert int(store.ks.max()) == 64 // 4  # decode masks were cached, full
    assert max(backend._steps) >= 7
    hip.check_integrity()


# ---- the CUDA-graph decode plan, run eagerly on CPU ------------------------------------------------
def test_graph_plan_decode_equals_the_eager_plan():
    """The plan a captured graph replays (static tensors, padded rows, the first stage sized by the
    context length, the mask cache indexed through cache_rows) decodes exactly like the eager plan,
    over a refresh schedule where rows sit at different stages."""
    from sgl.runtime.attention.hip.backend import HipAttnBackend
    from sgl.runtime.executor.forward_batch import ForwardBatch, ForwardMode
    from sgl.runtime.layers.rotary import get_rope
    from sgltest.backend_world import World

    gen = torch.Generator().manual_seed(5)
    world = World("cpu", gen, 4, 2, 32, torch.float32, num_reqs=3, max_ctx=512, slots=1400)
    cfg = parse_hip_config(small_config(window=32, sink=8, refresh=(4, 2, 1)))
    rope = get_rope(32, 32, 4096, 10000.0)
    eager, graph = (HipAttnBackend(None, cfg, rope, context_len=512) for _ in range(2))
    world.fill_prefix([300, 170, 410])
    graph.init_cuda_graph_state(4)
    for backend in (eager, graph):  # the prefill resets every row's schedule
        backend._advance(world.rows)
        for r in world.rows:
            backend._steps[r] = 0
    graph._steps[world.rows[1]] = eager._steps[world.rows[1]] = 3  # one row mid-schedule
    for step in range(6):
        fbs = world.twin_batches(ForwardMode.DECODE, [eager, graph], [1, 1, 1])
        eager.init_forward_metadata(fbs[0])
        fb = fbs[1]
        padded = ForwardBatch(
            forward_mode=ForwardMode.DECODE, batch_size=4, input_ids=torch.zeros(4, dtype=torch.long),
            positions=torch.zeros(4, dtype=torch.long), req_pool_indices=torch.cat((fb.req_pool_indices, torch.zeros(1, dtype=torch.long))),
            seq_lens=torch.cat((fb.seq_lens, torch.ones(1, dtype=torch.long))), out_cache_loc=torch.cat((fb.out_cache_loc, torch.zeros(1, dtype=torch.long))),
            req_to_token_pool=fb.req_to_token_pool, token_to_kv_pool=fb.token_to_kv_pool, attn_backend=graph)
        variant = graph.cuda_graph_variant(fb, 4)
        assert variant == fbs[0].attn_metadata.from_stage
        graph.init_forward_metadata_capture_cuda_graph(4, padded.req_pool_indices, padded.seq_lens, variant=variant)
        for layer in world.layers:
            q, k, v = world.qkv(3)
            ours = graph.forward(torch.cat((q, q[:1])), torch.cat((k, k[:1])), torch.cat((v, v[:1])), layer, padded)
            ref = eager.forward(q, k, v, layer, fbs[0])
            torch.testing.assert_close(ours[:3], ref, rtol=0, atol=0)

