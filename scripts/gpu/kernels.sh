# Issue 6, kernels: the kernel tests on the GPU (the real-shape tests marked gpu, plus every
# small-shape test compiled for the GPU instead of interpreted), then the kernel benchmark.
# Usage (GPU machine, repo root): bash scripts/gpu/kernels.sh [all|tests|bench] [all|decode|extend|none]
# (the second argument picks the launch-shape sweeps of the benchmark)
# Writes $OUT/kernels_tests.log, $OUT/bench_kernels.json and $OUT/bench_kernels.log. The time
# limits keep "all" inside one 10-minute call; run "tests" and "bench" separately if one is cut.
source scripts/gpu/setup.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
unset TRITON_INTERPRET
what=${1:-all}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ "$what" = all ] || [ "$what" = tests ]; then
  timeout 270 python3 -m pytest tests/kernels -m "gpu or not slow" -q -p no:cacheprovider -rs --durations=8 2>&1 \
    | tee "$OUT/kernels_tests.log" | tail -40
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  timeout 290 python3 -m sgl.runtime.bench.kernels --sweep "${2:-all}" --json "$OUT/bench_kernels.json" 2>&1 \
    | tee "$OUT/bench_kernels.log" | tail -45
fi
