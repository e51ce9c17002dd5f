# Issue 13 on the GPU: where a decode step's host time goes when constrained requests ride in the
# batch. The scheduler in process (scripts/gpu/profile_decode.py), default model, 64 requests: all
# free, 1 under bench_json --batch-mix's free-string schema, all 64 under it; median step, device
# busy, host time by scheduler phase, then cProfile of the host by function.
# Usage: bash scripts/gpu/constrained_profile.sh [STEPS] [TAG]; run from another checkout's root
# (cd .before && bash ../scripts/gpu/constrained_profile.sh 40 before) to profile that checkout
# with this script.
here="$(cd "$(dirname "$0")" && pwd)"
source scripts/gpu/setup.sh
steps="${1:-100}"
tag="${2:-}"
for n in ${COUNTS:-0 1 64}; do
  echo "== $n of 64 constrained"
  timeout 150 python3 "$here/profile_decode.py" --batch 64 --input-len 16 --warm-steps 20 --steps "$steps" \
    --constrained "$n" --host-profile --log-level warning 2>&1 | tee "$OUT/constrained_profile_$tag$n.log" \
    | grep -E "median step|host phases|running requests"
done
