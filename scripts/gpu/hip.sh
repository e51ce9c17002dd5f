# Issue 14 on the GPU: HiP kernels' tests (real shapes and every small-shape test compiled for the
# GPU), the HiP backend end to end on the default model, per-layer speed at Llama-3.1-8B shapes,
# passkey retrieval with the default model (HiP and dense), argmax agreement / perplexity against
# dense inside the window, and recall of the attention mass at 32K.
# Usage (GPU machine, repo root): bash scripts/gpu/hip.sh [tests|bench|decode|passkey|quality]...
# "decode": the pruning kernel's tests, then per-layer decode at 128K and 1M with decode pruning through
# the general kernel (as before the one-row kernel) and through the one-row kernel, in one session.
source scripts/gpu/setup.sh
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(tests bench)
for phase in "${phases[@]}"; do
  case "$phase" in
    tests)
      timeout 200 python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/kernels/test_hip_bsa.py \
        tests/kernels/test_hip_prune.py -rs -x 2>&1 | tee "$OUT/hip_kernel_tests.log" | tail -15
      timeout 150 python3 -m pytest -q -p no:cacheprovider tests/runtime/test_hip_attention.py -rs -x 2>&1 \
        | tee "$OUT/hip_backend_tests.log" | tail -8 ;;
    bench)
      timeout 280 python3 -m sgl.bench_hip kernels --contexts 32768 131072 1048576 --json "$OUT/hip_kernels.json" 2>&1 \
        | tee "$OUT/hip_kernels.log" | tail -6 ;;
    decode)
      timeout 150 python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/kernels/test_hip_prune.py -rs -x \
        2>&1 | tee "$OUT/hip_prune_tests.log" | tail -4
      for variant in general one-row; do
        extra=(); [ "$variant" = general ] && extra=(--general-prune-kernel)
        timeout 200 python3 -m sgl.bench_hip kernels --contexts 131072 1048576 --skip-dense-prefill "${extra[@]}" \
          --json "$OUT/hip_decode_$variant.json" 2>&1 | tee "$OUT/hip_decode_$variant.log" | tail -2
      done ;;
    quality)
      timeout 200 python3 -m sgl.bench_hip quality --lengths 2048 4096 6144 --json "$OUT/hip_quality.json" 2>&1 \
        | tee "$OUT/hip_quality.log" | grep -v "^\[" | tail -5
      timeout 200 python3 -m sgl.bench_hip recall --length 32768 --json "$OUT/hip_recall.json" 2>&1 \
        | tee "$OUT/hip_recall.log" | grep -v "^\[" | tail -3 ;;
    passkey)
      timeout 540 python3 -m sgl.bench_hip passkey --lengths 16384 32768 65536 --depths 10 --dense \
        --json "$OUT/hip_passkey.json" 2>&1 | tee "$OUT/hip_passkey.log" | grep -v "^\[" | tail -12 ;;
  esac
done
