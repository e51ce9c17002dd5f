"""Which decode batch sizes get a CUDA graph (the choice runs on CPU; capture is tested on the GPU)."""

import pytest

from sgl.runtime.executor.cuda_graph_runner import GIB, capture_batch_sizes, default_cuda_graph_max_bs
from sgl.runtime.server_args import ServerArgs


@pytest.mark.parametrize("gib,tp,want", [(16, 1, 8), (24, 4, 80), (40, 1, 160), (48, 2, 160), (79.6, 1, 256),
                                          (139.8, 1, 256)])
def test_default_max_bs_follows_the_cards_memory(gib, tp, want):
    assert default_cuda_graph_max_bs(int(gib * GIB), tp) == want


def test_capture_sizes_are_capped_by_the_max_and_the_request_slots():
    sizes = capture_batch_sizes(256, 1024)
    assert sizes[:5] == [1, 2, 4, 8, 16] and sizes[-1] == 256 and all(b % 8 == 0 for b in sizes[3:])
    assert capture_batch_sizes(256, 100)[-1] == 96
    assert capture_batch_sizes(12, 1024) == [1, 2, 4, 8]
    assert capture_batch_sizes(64, 1024, [3, 48, 200]) == [3, 48]


@pytest.mark.parametrize("kw,flag", [(dict(cuda_graph_max_bs=0), "--cuda-graph-max-bs"),
                                     (dict(cuda_graph_bs=[8, 0]), "--cuda-graph-bs")])
def test_bad_graph_sizes_name_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        ServerArgs(model_path="not-loaded", tokenizer_path="not-loaded", **kw)


def test_unset_max_bs_stays_auto():
    assert ServerArgs(model_path="not-loaded", tokenizer_path="not-loaded").cuda_graph_max_bs is None


def test_srt_max_batch_env(monkeypatch):
    from sgl.runtime.executor.cuda_graph_runner import srt_max_batch

    monkeypatch.delenv("SRT_MAX_BATCH", raising=False)
    assert srt_max_batch() is None
    monkeypatch.setenv("SRT_MAX_BATCH", "8")
    assert srt_max_batch() == 8
    monkeypatch.setenv("SRT_MAX_BATCH", "-1")  # the fork's "no cap"
    assert srt_max_batch() is None
    monkeypatch.setenv("SRT_MAX_BATCH", "many")
    with pytest.raises(ValueError, match="SRT_MAX_BATCH"):
        srt_max_batch()
