#!/bin/bash
# Pack what the GPU machine (Python 3.12, no registry) needs to run Triton and the
# triton_grpc core into .dev/ (ignored by git; carry it with the device tool's run):
#   .dev/triton312.tar.xz   nvidia-pytriton's server tree (stub for 3.12) + its libraries
#   .dev/whl/*.whl          tritonclient, python-rapidjson, grpcio, protobuf, mlcommons-loadgen
#   .dev/stubwhl/*.whl      numpy 1.26 for the stub's venv (numpy 2.5 there sent empty tensors)
# Needs `make triton` first. Then on the device: bash harness/scripts/triton_device.sh CMD...
set -eo pipefail
cd "$(dirname "$0")/../.."
SP=$(ls -d build/triton/venv/lib/python3*/site-packages)
tmp=$(mktemp -d)
mkdir -p "$tmp/triton" .dev/whl .dev/stubwhl
cp -a "$SP/pytriton/tritonserver" "$tmp/triton/server"
cp -a "$SP/nvidia_pytriton.libs" "$tmp/triton/libs"
rm -rf "$tmp/triton/server/backends/python/__pycache__" "$tmp/triton/libs"/libpython3-*
cp "$tmp/triton/server/python_backend_stubs/3.12/triton_python_backend_stub" \
    "$tmp/triton/server/backends/python/"
rm -rf "$tmp/triton/server/python_backend_stubs"
tar -C "$tmp" -cf - triton | xz -6 -T2 > .dev/triton312.tar.xz
rm -rf "$tmp"
get() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
get .dev/whl tritonclient==2.73.0 python-rapidjson==1.25 grpcio==1.85.1 protobuf==6.33.6 \
    mlcommons-loadgen==6.0.17
get .dev/stubwhl numpy==1.26.4
du -sh .dev
