# Issue 15 on the GPU: HiP KV offloading. Usage (GPU machine, repo root):
#   bash scripts/gpu/hip_offload.sh [tests|bench|passkey|prefill]...
# tests:   the offload kernels' tests compiled for the GPU, the offloaded engine against the GPU pool
#          (pinned host memory read in place, CUDA graphs), and the HiP kernel/backend tests;
# bench:   batch-1 decode of a Llama-3.1-8B shape (dummy weights, fp8 KV, CUDA graphs) over synthetic
#          contexts of 128K, 512K and 1M tokens, offloaded and (up to 512K) with the KV on the GPU:
#          ms per token, peak GPU memory, cache hit ratios;
# passkey: pass-key retrieval with the default model at 128K tokens, HiP with offload, 10 depths;
# prefill: one 128K-token prompt of the 8B shape through the scheduler, offloaded (prefill time).
source scripts/gpu/setup.sh
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(tests bench)
for phase in "${phases[@]}"; do
  case "$phase" in
    tests)
      timeout 240 python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/kernels/test_hip_offload.py \
        tests/runtime/test_hip_offload_pool.py tests/kernels/test_hip_bsa.py tests/kernels/test_hip_prune.py -rs -x 2>&1 \
        | tee "$OUT/offload_tests.log" | tail -12 ;;
    bench)
      timeout 420 python3 -m sgl.bench_hip offload --contexts 131072 524288 1048576 --steps 64 \
        --json "$OUT/hip_offload.json" 2>&1 | tee "$OUT/hip_offload.log" | grep "^{" | cut -c1-400 ;;
    passkey)
      timeout 400 python3 -m sgl.bench_hip passkey --lengths 131072 --depths 10 --enable-hip-offload \
        --chunked-prefill-size 16384 --json "$OUT/hip_offload_passkey.json" 2>&1 \
        | tee "$OUT/hip_offload_passkey.log" | grep -v "^\[" | tail -4 ;;
    prefill)
      timeout 300 python3 -m sgl.bench_one_batch --model-path llama-3.1-8b --load-format dummy --enable-hip-attention \
        --enable-hip-offload --kv-cache-dtype fp8_e5m2 --context-length 140000 --max-total-tokens 140000 \
        --chunked-prefill-size 32768 --max-running-requests 1 --batch-size 1 --input-len 131072 --output-len 32 2>&1 \
        | tee "$OUT/hip_offload_prefill.log" | tail -6 ;;
    other)
      # the GPU tests of earlier work not yet run on a GPU: model families' kernels, fused MoE, embeddings
      timeout 300 python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/kernels/test_kernels_gpu.py \
        tests/kernels/test_fused_moe.py -rs 2>&1 | tee "$OUT/other_gpu_tests.log" | tail -8 ;;
  esac
done
