# T5 on the GPU: JSON-schema decoding cost vs plain decoding, and jump-forward on vs off.
source scripts/gpu/setup.sh
timeout 280 python3 -m sgl.bench_json --model-path llama-3.1-8b --load-format dummy --tokenizer-path .tok \
  --json-model-override-args '{"vocab_size": 49152}' --batch-size 1 32 --log-level warning \
  --result-filename "$OUT/bench_json.jsonl" 2>&1 | tee "$OUT/bench_json.log" | tail -6
# T5 again with a free-text field (maxLength 300) next to the long fixed keys
timeout 280 python3 -m sgl.bench_json --model-path llama-3.1-8b --load-format dummy --tokenizer-path .tok \
  --json-model-override-args '{"vocab_size": 49152}' --batch-size 1 32 --log-level warning \
  --schema-file scripts/gpu/free_string_schema.json \
  --result-filename "$OUT/bench_json_free.jsonl" 2>&1 | tee "$OUT/bench_json_free.log" | tail -6
