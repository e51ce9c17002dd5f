# Issue 13 on the GPU: what constrained requests cost the batch they run in (bench_json
# --batch-mix), before (BEFORE_TREE, an older checkout) and after (this tree), with the default
# model and with an 8B shape (dummy weights, the default model's tokenizer in .tok).
# Usage: bash scripts/gpu/json_mix.sh [default|8b|both] [BEFORE_TREE]
source scripts/gpu/setup.sh
which="${1:-both}"
before="${2:-}"
bench="$(pwd)/runtime/bench/json_decode.py"   # this tree's benchmark also drives the older engine
mix() {  # tag, extra args... (the last --max-new-tokens given wins)
  local tag="$1"; shift
  timeout 280 python3 -P "$bench" --batch-mix --batch-size 64 --max-new-tokens 128 --repeats 3 --log-level warning \
    --result-filename "$OUT/mix_$tag.jsonl" "$@" 2>&1 | tee "$OUT/mix_$tag.log" | grep -v "^\[" | tail -8
}
# The 8B shape has dummy weights: its tokens average ~4.7 characters, so within 128 tokens a JSON request
# passes the schema's minLength (400) and closes its string early (the 2026-12-06 run finished after ~86
# tokens); 64 new tokens keep every request inside the free string.
EIGHT_B=(--model-path llama-3.1-8b --load-format dummy --tokenizer-path "$(pwd)/.tok"
         --json-model-override-args '{"vocab_size": 49152, "eos_token_id": 2, "bos_token_id": 1}' --max-new-tokens 64)
if [ -n "$before" ]; then
  (cd "$before" && python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null)
  echo "== before ($before)"
  [ "$which" != 8b ] && mix before_default
  [ "$which" != default ] && mix before_8b "${EIGHT_B[@]}"
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null
fi
echo "== after"
[ "$which" != 8b ] && mix after_default
[ "$which" != default ] && mix after_8b "${EIGHT_B[@]}"
