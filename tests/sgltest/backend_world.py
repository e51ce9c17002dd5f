"""A small serving world for backend tests: KV pools, a request table with scattered slots, and
ForwardBatches built the way the model runner builds them, one twin per backend under test."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from sgltest.kernel_checks import rel_err
from sgl.runtime.executor.forward_batch import ForwardBatch
from sgl.runtime.layers.attention import RadixAttention
from sgl.runtime.mem.memory_pool import ReqToTokenPool, TokenToKVPool

LAYERS = 2


def fake_runner(heads: int, head_dim: int, device: str, splits: int = 3, kv_heads: int = 1):
    """What TritonAttnBackend reads off a ModelRunner."""
    mc = SimpleNamespace(head_dim=head_dim, get_num_attention_heads=lambda tp, rank=0: heads // tp,
                         get_num_kv_heads=lambda tp, rank=0: max(1, kv_heads // tp))
    sa = SimpleNamespace(triton_attention_num_kv_splits=splits, tp_size=1)
    return SimpleNamespace(server_args=sa, model_config=mc, device=device)


class World:
    """Two identical pools (one per backend) and a request table with scattered slots."""

    def __init__(self, device, gen, heads, kv_heads, head_dim, kv_dtype, num_reqs=3, max_ctx=64, slots=300,
                 dtype=torch.float32):
        self.device, self.gen, self.dtype = device, gen, dtype
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.r2t = ReqToTokenPool(num_reqs + 3, max_ctx, device)
        self.pools = [TokenToKVPool(slots, kv_dtype, kv_heads, head_dim, LAYERS, device) for _ in range(2)]
        self.free = (torch.randperm(slots, generator=gen) + 1).tolist()  # scattered slots, never slot 0
        self.rows = torch.randperm(num_reqs + 3, generator=gen)[:num_reqs].tolist()  # rows out of order
        self.lens = [0] * num_reqs
        self.layers = [RadixAttention(heads, head_dim, head_dim**-0.5, kv_heads, i) for i in range(LAYERS)]

    def take(self, row_i: int, n: int) -> torch.Tensor:
        slots = torch.tensor([self.free.pop() for _ in range(n)], dtype=torch.int64)
        self.r2t.write(self.rows[row_i], self.lens[row_i], slots)
        self.lens[row_i] += n
        return slots

    def fill_prefix(self, prefix):
        for i, n in enumerate(prefix):
            slots = self.take(i, n).to(self.device)
            for layer in range(LAYERS):
                k = torch.randn(n, self.kv_heads, self.head_dim, generator=self.gen).to(self.dtype).to(self.device)
                v = torch.randn(n, self.kv_heads, self.head_dim, generator=self.gen).to(self.dtype).to(self.device)
                for pool in self.pools:
                    pool.set_kv_buffer(layer, slots, k, v)

    def batch(self, mode, pool, backend, new_lens, prefix_lens) -> ForwardBatch:
        loc = torch.cat([self.take(i, n) for i, n in enumerate(new_lens)]).to(self.device)
        t = int(loc.shape[0])
        fb = ForwardBatch(
            forward_mode=mode, batch_size=len(new_lens), input_ids=torch.zeros(t, dtype=torch.int64, device=self.device),
            positions=torch.zeros(t, dtype=torch.int64, device=self.device),
            req_pool_indices=torch.tensor(self.rows, device=self.device), seq_lens=torch.tensor(self.lens, device=self.device),
            out_cache_loc=loc, req_to_token_pool=self.r2t, token_to_kv_pool=pool, attn_backend=backend,
            seq_lens_cpu=list(self.lens), req_pool_indices_cpu=list(self.rows),
        )
        if mode.is_extend():
            fb.extend_seq_lens_cpu, fb.extend_prefix_lens_cpu = list(new_lens), list(prefix_lens)
            fb.extend_seq_lens = torch.tensor(new_lens, device=self.device)
            fb.extend_prefix_lens = torch.tensor(prefix_lens, device=self.device)
            fb.extend_start_loc = torch.tensor([sum(new_lens[:i]) for i in range(len(new_lens))], device=self.device)
        return fb

    def twin_batches(self, mode, backends, new_lens, prefix_lens=None):
        """The same batch for both backends (slots taken once, lengths advanced once)."""
        saved = (list(self.free), list(self.lens), self.r2t.req_to_token.clone())
        fbs = []
        for pool, backend in zip(self.pools, backends):
            self.free, self.lens = list(saved[0]), list(saved[1])
            self.r2t.req_to_token.copy_(saved[2])
            fbs.append(self.batch(mode, pool, backend, new_lens, prefix_lens))
        return fbs

    def qkv(self, t):
        widths = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        fused = torch.randn(t, sum(widths), generator=self.gen).to(self.dtype).to(self.device)
        return fused.split(widths, dim=-1)  # strided views, as the model's qkv projection gives them


def compare_layers(world, backends, fbs, tol):
    """Plan fbs, run every layer through both backends on the same q/k/v; compare outputs and pools."""
    for backend, fb in zip(backends, fbs):
        backend.init_forward_metadata(fb)
    for layer in world.layers:
        q, k, v = world.qkv(fbs[0].num_tokens)
        ours = backends[0].forward(q, k, v, layer, fbs[0])
        ref = backends[1].forward(q, k, v, layer, fbs[1])
        assert ours.shape == ref.shape == q.shape
        assert rel_err(ours, ref) < tol, f"layer {layer.layer_id}: {rel_err(ours, ref)}"
        for mine, theirs in zip(world.pools[0].get_kv_buffer(layer.layer_id), world.pools[1].get_kv_buffer(layer.layer_id)):
            # the fused store wrote the same slots with the same rounding (torch's casts round to
            # nearest even, as the GPU's do; saturation differs only past the fp8 range)
            assert torch.equal(mine.float(), theirs.float())
