# Issue 2's GPU baseline: bench_one_batch, Llama-3.1-8B config, dummy weights, batch 1 and 64,
# beside HF transformers generate in the same run. Usage (GPU machine): bash scripts/gpu/engine_baseline.sh
source scripts/gpu/setup.sh
python3 -m sgl.bench_one_batch --model-path llama-3.1-8b --load-format dummy --attention-backend torch_native \
  --batch-size 1 64 --input-len 128 --output-len 256 --hf-baseline --log-level warning \
  --result-filename "$OUT/bench_one_batch.jsonl" 2>&1 | tee "$OUT/engine_baseline.log"
