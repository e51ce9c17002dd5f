# GPU fast path, end to end (T1): bench_one_batch with the Triton backend and CUDA graphs, with the
# overlap scheduler (default) and without it, beside HF transformers in the same run
# (Llama-3.1-8B config, dummy weights); then batch 1 without CUDA graphs.
source scripts/gpu/setup.sh
B="python3 -m sgl.bench_one_batch --model-path llama-3.1-8b --load-format dummy --input-len 128 --output-len 256 --log-level warning --result-filename $OUT/fast.jsonl"
timeout 200 $B --batch-size 1 64 --hf-baseline 2>&1 | tee "$OUT/engine_fast.log" | tail -6
timeout 120 $B --batch-size 1 64 --disable-overlap-schedule 2>&1 | tail -3 | tee -a "$OUT/engine_fast.log"
timeout 90 $B --batch-size 1 --disable-cuda-graph 2>&1 | tail -2 | tee -a "$OUT/engine_fast.log"
