# First of the two staging runs (see ../shared/gpu/README.md): wheels and the model's first half.
mkdir -p /root/stage && cp .model1/* /root/stage/ && python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site .whl/*.whl && echo staged-1
