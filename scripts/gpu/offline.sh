# Offline throughput. Usage: bash scripts/gpu/offline.sh [t2|t4|all]
# T2: random 1024/1024 x 2000. T4: shared prefixes with and without the radix cache.
source scripts/gpu/setup.sh
what=${1:-all}
O="python3 -m sgl.bench_offline_throughput --model-path llama-3.1-8b --load-format dummy --log-level warning --result-filename $OUT/offline.jsonl"
if [ "$what" = all ] || [ "$what" = t2 ]; then
  timeout 420 $O --dataset-name random --random-input-len 1024 --random-output-len 1024 --random-range-ratio 1.0 --num-prompts 2000 2>&1 | tail -8
fi
if [ "$what" = all ] || [ "$what" = t4 ]; then
  timeout 150 $O --dataset-name generated-shared-prefix 2>&1 | tail -8
  timeout 210 $O --dataset-name generated-shared-prefix --disable-radix-cache 2>&1 | tail -8
fi
