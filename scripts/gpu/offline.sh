# Offline throughput (T2: random 1024/1024 x 2000) and shared prefixes with and without the radix cache (T4).
source scripts/gpu/setup.sh
O="python3 -m sgl.bench_offline_throughput --model-path llama-3.1-8b --load-format dummy --log-level warning --result-filename $OUT/offline.jsonl"
timeout 330 $O --dataset-name random --random-input-len 1024 --random-output-len 1024 --random-range-ratio 1.0 --num-prompts 2000 2>&1 | tail -8
timeout 120 $O --dataset-name generated-shared-prefix 2>&1 | tail -8
timeout 150 $O --dataset-name generated-shared-prefix --disable-radix-cache 2>&1 | tail -8
