# GPU fast path, end to end: bench_one_batch with the Triton backend, with and without CUDA graphs,
# beside HF transformers in the same run (Llama-3.1-8B config, dummy weights).
source scripts/gpu/setup.sh
B="python3 -m sgl.bench_one_batch --model-path llama-3.1-8b --load-format dummy --input-len 128 --output-len 256 --log-level warning"
$B --batch-size 1 64 --hf-baseline --result-filename "$OUT/fast.jsonl" 2>&1 | tee "$OUT/engine_fast.log"
$B --batch-size 1 --disable-cuda-graph --result-filename "$OUT/fast.jsonl" 2>&1 | tail -3 | tee -a "$OUT/engine_fast.log"
