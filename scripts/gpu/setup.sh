# Source at the start of every GPU run (from the repo root): installs the wheels sent in .whl/
# and the project (editable, no index).
set -e
# (a run that carries no .whl uses what the staging run installed into /root/site)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:/root/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
set +e
