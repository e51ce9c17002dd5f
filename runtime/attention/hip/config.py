"""HiP attention configuration: `--hip-attention-config` (a JSON string or a JSON file), presets.

The keys are the seed fork's (docs/hip.md lists them):

    {"dense_layers": [0, 1, 2], "block_sparse_block_size_q": 64, "mask_refresh_interval": [16, 8, 4],
     "using_extend": true,
     "layers": [<config of the dense layers>, <config of the others>]}   # or one entry per layer

A layer config: {"second_stage_k", "sliding_window_size", "sink_token_size", "sa_extend_backend",
"scan_extend_backend", "stages": [{"stage_block_size_q", "stage_block_stride_q", "stage_chunk_size",
"stage_k", "stage_stride"}, ...]}. "Dense" layers are not dense: they get the first layer config
(a larger `second_stage_k` and chunk-indexed pruning positions), as in InfiniteHiP.

Presets: "3K" (the default), "5K", "16K-shallow"; `{"preset": "5K", ...}` starts from a preset and
overrides its top-level keys. Every error is a ValueError that names --hip-attention-config.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

FLAG = "--hip-attention-config"


@dataclass(frozen=True)
class HipStage:
    block_size_q: int
    stride_q: int
    chunk_size: int
    k: Optional[int]  # tokens kept at the entry of this stage (None for the first)


@dataclass(frozen=True)
class HipLayerConfig:
    second_stage_k: int
    sliding_window_size: int
    sink_token_size: int
    scan_extend_backend: str  # "streaming" (chunk-indexed) or "relative"
    sa_extend_backend: str  # "streaming"
    stages: Tuple[HipStage, ...]

    @property
    def block_k(self) -> int:
        """Key block of the sparse attention: the last stage's chunk."""
        return self.stages[-1].chunk_size

    @property
    def sw_scan(self) -> int:
        """The pruning scan stops this many tokens before the query block (the window less one chunk)."""
        return max(0, self.sliding_window_size - self.stages[0].chunk_size)

    @property
    def max_blocks(self) -> int:
        return self.second_stage_k // self.block_k


@dataclass(frozen=True)
class HipConfig:
    dense_layers: Tuple[int, ...]
    block_size_q: int
    refresh_interval: Tuple[int, ...]  # one per stage
    using_extend: bool
    layers: Tuple[HipLayerConfig, ...]  # 2 entries (dense, other) or one per layer

    def layer(self, layer_id: int) -> HipLayerConfig:
        if len(self.layers) == 2:
            return self.layers[0] if layer_id in self.dense_layers else self.layers[1]
        if layer_id >= len(self.layers):
            raise ValueError(f"{FLAG}: 'layers' has {len(self.layers)} entries but the model has layer {layer_id}")
        return self.layers[layer_id]

    def refresh_stage(self, step: int) -> Optional[int]:
        """The first stage recomputed at decode step `step` since the last extend (None: reuse the mask)."""
        if step == 0:
            return 0
        for i, n in enumerate(self.refresh_interval):
            if step % n == 0:
                return i
        return None

    def to_json(self) -> dict:
        return {
            "dense_layers": list(self.dense_layers),
            "block_sparse_block_size_q": self.block_size_q,
            "mask_refresh_interval": list(self.refresh_interval),
            "using_extend": self.using_extend,
            "layers": [_layer_json(c) for c in self.layers],
        }


def _stages(chunks: Sequence[int], keeps: Sequence[Optional[int]], strides: Sequence[int], bq: int = 64) -> List[dict]:
    return [{"stage_block_size_q": bq, "stage_block_stride_q": s, "stage_chunk_size": c, "stage_k": k, "stage_stride": 1}
            for c, k, s in zip(chunks, keeps, strides)]


_3K_STAGES = _stages((256, 32, 8), (None, 32768, 8192), (4, 4, 1))
_5K_STAGES = _stages((64, 32, 16), (None, 32768, 16384), (4, 4, 1))


def _layer(second_stage_k: int, stages: List[dict], sw: int = 1024, sink: int = 256, scan: Optional[str] = None) -> dict:
    return {"second_stage_k": second_stage_k, "sliding_window_size": sw, "sink_token_size": sink,
            "sa_extend_backend": "streaming", "scan_extend_backend": scan, "stages": stages}


PRESETS: Dict[str, dict] = {
    "3K": {"dense_layers": [0, 1, 2], "block_sparse_block_size_q": 64, "mask_refresh_interval": [16, 8, 4],
           "using_extend": True, "layers": [_layer(4096, _3K_STAGES), _layer(2048, _3K_STAGES)]},
    "5K": {"dense_layers": [0, 1, 2], "block_sparse_block_size_q": 64, "mask_refresh_interval": [16, 8, 4],
           "using_extend": True, "layers": [_layer(4096, _5K_STAGES), _layer(4096, _5K_STAGES)]},
    # one stage of 32-token chunks; the first 3 layers see a 128K window (RULER settings of the paper)
    "16K-shallow": {"dense_layers": [0, 1, 2], "block_sparse_block_size_q": 64, "mask_refresh_interval": [8],
                    "using_extend": True,
                    "layers": [_layer(16384, _stages((32,), (None,), (1,)), sw=131072),
                               _layer(16384, _stages((32,), (None,), (1,)))]},
}
DEFAULT_PRESET = "3K"
_TOP_KEYS = {"preset", "dense_layers", "block_sparse_block_size_q", "mask_refresh_interval", "using_extend", "layers",
             "metadata_cache_max_batch_size", "prefill_layers", "apply_v_dot", "prefill_always_dense",
             "decode_always_dense", "force_dense", "prefill_dense_threshold"}
_DEPRECATED = {"metadata_cache_max_batch_size", "apply_v_dot", "prefill_always_dense", "decode_always_dense",
               "force_dense", "prefill_dense_threshold"}
_LAYER_KEYS = {"second_stage_k", "sliding_window_size", "sink_token_size", "sa_extend_backend", "scan_extend_backend",
               "stages"}
_STAGE_KEYS = {"stage_block_size_q", "stage_block_stride_q", "stage_chunk_size", "stage_k", "stage_stride"}


def load_hip_config(value: Optional[str]) -> HipConfig:
    """Parse --hip-attention-config: None (the default preset), a preset name, a JSON object string or
    the path of a JSON file."""
    if value is None or value == "":
        raw: Any = {"preset": DEFAULT_PRESET}
    elif value in PRESETS:
        raw = {"preset": value}
    elif value.lstrip().startswith("{"):
        raw = _parse_json(value, "the JSON string")
    elif os.path.isfile(value):
        with open(value) as f:
            raw = _parse_json(f.read(), f"file {value}")
    else:
        raise ValueError(f"{FLAG} must be a preset ({', '.join(PRESETS)}), a JSON object or a JSON file; "
                         f"got {value!r}, which is none of these")
    return parse_hip_config(raw)


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{FLAG}: {what} is not valid JSON: {e}") from None


def parse_hip_config(raw: Any) -> HipConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{FLAG} must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{FLAG}: unknown key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    preset = raw.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{FLAG}: preset must be one of {list(PRESETS)}, got {preset!r}")
    merged = copy.deepcopy(PRESETS[preset or DEFAULT_PRESET])
    merged.update({k: v for k, v in raw.items() if k != "preset" and k not in _DEPRECATED})
    if "prefill_layers" in raw:
        raise ValueError(f"{FLAG}: 'prefill_layers' (separate prefill configs) is not supported; "
                         "prefill and decode use 'layers'")

    dense = merged["dense_layers"]
    if not isinstance(dense, list) or not all(isinstance(i, int) and i >= 0 for i in dense):
        raise ValueError(f"{FLAG}: dense_layers must be a list of layer indices, got {dense!r}")
    bq = _pos_int(merged["block_sparse_block_size_q"], "block_sparse_block_size_q")
    if bq & (bq - 1):
        raise ValueError(f"{FLAG}: block_sparse_block_size_q must be a power of two, got {bq}")
    if not isinstance(merged["using_extend"], bool):
        raise ValueError(f"{FLAG}: using_extend must be true or false")
    layers_raw = merged["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise ValueError(f"{FLAG}: layers must be a non-empty list of layer configs")
    layers = tuple(_parse_layer(c, i, bq) for i, c in enumerate(layers_raw))
    n_stages = len(layers[0].stages)
    if any(len(c.stages) != n_stages for c in layers):
        raise ValueError(f"{FLAG}: every layer config must have the same number of stages")
    interval = merged["mask_refresh_interval"]
    if isinstance(interval, int):
        interval = [interval] * n_stages
    if not isinstance(interval, list) or len(interval) != n_stages:
        raise ValueError(f"{FLAG}: mask_refresh_interval must be an int or one int per stage ({n_stages}), "
                         f"got {merged['mask_refresh_interval']!r}")
    interval = tuple(_pos_int(n, "mask_refresh_interval") for n in interval)
    return HipConfig(tuple(dense), bq, interval, merged["using_extend"], layers)


def _pos_int(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{FLAG}: {name} must be a positive integer, got {v!r}")
    return v


def _parse_layer(raw: Any, i: int, bq: int) -> HipLayerConfig:
    where = f"layers[{i}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{FLAG}: {where} must be an object")
    unknown = set(raw) - _LAYER_KEYS
    if unknown:
        raise ValueError(f"{FLAG}: {where} has unknown key(s) {sorted(unknown)}; known: {sorted(_LAYER_KEYS)}")
    base = _layer(2048, copy.deepcopy(_3K_STAGES))
    base.update(raw)
    sa = base["sa_extend_backend"]
    if sa != "streaming":
        raise ValueError(f"{FLAG}: {where}.sa_extend_backend must be 'streaming' (the only one built), got {sa!r}")
    scan = base["scan_extend_backend"]
    if scan is None:
        scan = "streaming" if i == 0 else "relative"
    if scan not in ("streaming", "relative"):
        raise ValueError(f"{FLAG}: {where}.scan_extend_backend must be 'streaming', 'relative' or null, got {scan!r}")
    stages_raw = base["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ValueError(f"{FLAG}: {where}.stages must be a non-empty list")
    stages = []
    for j, s in enumerate(stages_raw):
        sw = f"{where}.stages[{j}]"
        if not isinstance(s, dict) or set(s) - _STAGE_KEYS:
            raise ValueError(f"{FLAG}: {sw} must be an object with keys among {sorted(_STAGE_KEYS)}")
        sbq = _pos_int(s.get("stage_block_size_q", bq), f"{sw}.stage_block_size_q")
        if sbq != bq:
            raise ValueError(f"{FLAG}: {sw}.stage_block_size_q must equal block_sparse_block_size_q ({bq}), got {sbq}")
        stride = _pos_int(s.get("stage_block_stride_q", 1), f"{sw}.stage_block_stride_q")
        if bq % stride:
            raise ValueError(f"{FLAG}: {sw}.stage_block_stride_q must divide the query block {bq}, got {stride}")
        chunk = _pos_int(s.get("stage_chunk_size"), f"{sw}.stage_chunk_size")
        if chunk & (chunk - 1):
            raise ValueError(f"{FLAG}: {sw}.stage_chunk_size must be a power of two, got {chunk}")
        if s.get("stage_stride", 1) != 1:
            raise ValueError(f"{FLAG}: {sw}.stage_stride must be 1 (the only value built)")
        k = s.get("stage_k")
        if j == 0:
            if k is not None:
                raise ValueError(f"{FLAG}: {sw}.stage_k must be null (the first stage scans every chunk)")
        else:
            prev = stages[-1].chunk_size
            k = _pos_int(k, f"{sw}.stage_k")
            if prev % chunk or chunk > prev:
                raise ValueError(f"{FLAG}: {sw}.stage_chunk_size ({chunk}) must divide the previous stage's ({prev})")
            if k % prev:
                raise ValueError(f"{FLAG}: {sw}.stage_k ({k}) must be a multiple of the previous chunk size ({prev})")
        stages.append(HipStage(bq, stride, chunk, k))
    last = stages[-1].chunk_size
    second = _pos_int(base["second_stage_k"], f"{where}.second_stage_k")
    if second % last:
        raise ValueError(f"{FLAG}: {where}.second_stage_k ({second}) must be a multiple of the last chunk size ({last})")
    if len(stages) > 1 and second > stages[-1].k:
        raise ValueError(f"{FLAG}: {where}.second_stage_k ({second}) must not exceed the last stage's stage_k ({stages[-1].k})")
    window = _pos_int(base["sliding_window_size"], f"{where}.sliding_window_size")
    sink = base["sink_token_size"]
    if not isinstance(sink, int) or sink < 0:
        raise ValueError(f"{FLAG}: {where}.sink_token_size must be a non-negative integer, got {sink!r}")
    return HipLayerConfig(second, window, sink, scan, sa, tuple(stages))


def _layer_json(c: HipLayerConfig) -> dict:
    return _layer(c.second_stage_k, [{"stage_block_size_q": s.block_size_q, "stage_block_stride_q": s.stride_q,
                                      "stage_chunk_size": s.chunk_size, "stage_k": s.k, "stage_stride": 1}
                                     for s in c.stages], c.sliding_window_size, c.sink_token_size, c.scan_extend_backend)
