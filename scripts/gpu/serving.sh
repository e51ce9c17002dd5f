# bench_serving against a server on the Llama-3.1-8B config (dummy weights): 16 req/s (T3), and
# rate inf with "inf" as the first argument.
source scripts/gpu/setup.sh
python3 -m sgl.launch_server --model-path llama-3.1-8b --load-format dummy --skip-tokenizer-init --port 30000 \
  --log-level warning > "$OUT/server.log" 2>&1 &
SERVER=$!
for i in $(seq 300); do curl -sf http://127.0.0.1:30000/health >/dev/null && break; sleep 1; done
BS="python3 -m sgl.bench_serving --backend sgl --port 30000 --dataset-name random --random-input-len 256 --random-output-len 256 --random-range-ratio 1.0 --output-file $OUT/serving.jsonl"
if [ "${1:-}" = inf ]; then
  $BS --request-rate inf --num-prompts 500 2>&1 | tee "$OUT/serving_inf.log" | tail -25
fi
$BS --request-rate 16 --num-prompts 480 2>&1 | tee "$OUT/serving_16.log" | tail -25
kill $SERVER; wait $SERVER
