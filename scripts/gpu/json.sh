# T5 on the GPU: JSON-schema decoding cost vs plain decoding, and jump-forward on vs off.
source scripts/gpu/setup.sh
timeout 280 python3 -m sgl.bench_json --model-path llama-3.1-8b --load-format dummy --tokenizer-path .tok \
  --json-model-override-args '{"vocab_size": 49152}' --batch-size 1 32 --log-level warning \
  --result-filename "$OUT/bench_json.jsonl" 2>&1 | tee "$OUT/bench_json.log" | tail -6
