# Offline throughput. Usage: bash scripts/gpu/offline.sh [t2|t2-fixed|t2-fp8|t2-mixed|t2-fixed-mixed|t4|all]
# t2: the T2 command as written (SGLang's random dataset defaults: --random-range-ratio 0.0, so
# input and output lengths are uniform in [1, 1024]); t2-fixed: every prompt exactly 1024 in /
# 1024 out (bf16 KV; t2-fp8 the same with an fp8_e5m2 KV cache); the -mixed variants add
# --enable-mixed-chunk (not part of "all": run them beside their plain twin). T4: shared prefixes with and
# without the radix cache.
source scripts/gpu/setup.sh
what=${1:-all}
O="python3 -m sgl.bench_offline_throughput --model-path llama-3.1-8b --load-format dummy --result-filename $OUT/offline.jsonl"
T2="--dataset-name random --random-input-len 1024 --random-output-len 1024 --num-prompts 2000"
summary() { grep -c "Decode out of memory" "$1" | sed 's/^/retractions: /'; grep "captured CUDA graphs" "$1" | tail -1 | cut -c1-200; tail -7 "$1"; }
if [ "$what" = all ] || [ "$what" = t2 ]; then
  timeout 300 $O $T2 > "$OUT/t2.log" 2>&1; summary "$OUT/t2.log"
fi
if [ "$what" = all ] || [ "$what" = t2-fixed ]; then
  timeout 480 $O $T2 --random-range-ratio 1.0 > "$OUT/t2_fixed.log" 2>&1; summary "$OUT/t2_fixed.log"
fi
if [ "$what" = all ] || [ "$what" = t2-fp8 ]; then
  timeout 400 $O $T2 --random-range-ratio 1.0 --kv-cache-dtype fp8_e5m2 > "$OUT/t2_fp8.log" 2>&1; summary "$OUT/t2_fp8.log"
fi
if [ "$what" = t2-mixed ]; then
  timeout 300 $O $T2 --enable-mixed-chunk > "$OUT/t2_mixed.log" 2>&1; summary "$OUT/t2_mixed.log"
fi
if [ "$what" = t2-fixed-mixed ]; then
  timeout 480 $O $T2 --random-range-ratio 1.0 --enable-mixed-chunk > "$OUT/t2_fixed_mixed.log" 2>&1
  summary "$OUT/t2_fixed_mixed.log"
fi
if [ "$what" = all ] || [ "$what" = t4 ]; then
  timeout 150 $O --dataset-name generated-shared-prefix > "$OUT/t4.log" 2>&1; summary "$OUT/t4.log"
  timeout 210 $O --dataset-name generated-shared-prefix --disable-radix-cache > "$OUT/t4_noradix.log" 2>&1; summary "$OUT/t4_noradix.log"
fi
