# Source at the start of every GPU run (from the repo root): installs the wheels sent in .whl/
# and the project (editable, no index).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:/root/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
set +e
