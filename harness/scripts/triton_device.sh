#!/bin/bash
# On the GPU machine (carry .dev, made by triton_bundle.sh): Triton in /tmp/triton, the
# carried wheels on PYTHONPATH, then the command given, its output also in $OUT/bench.log:
#   bash harness/scripts/triton_device.sh python3 -m harness bench-triton --server counting ...
set -eo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
H=/tmp/triton; rm -rf $H
python3 -c "import tarfile; tarfile.open('.dev/triton312.tar.xz').extractall('/tmp')"
python3 -m venv $H/venv
SP=$(ls -d $H/venv/lib/python3*/site-packages)
mv $H/libs $SP/nvidia_pytriton.libs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SP .dev/stubwhl/*.whl
export LLMLIB_TRITON_HOME=$H
echo "cpus $(nproc)"; python3 --version; $H/venv/bin/python3 -c "import numpy; print('stub numpy', numpy.__version__)"
python3 -c "import tritonclient.grpc, grpc; print('grpc', grpc.__version__)"
"$@" 2>&1 | tee -a "${OUT:-/tmp}/bench.log" || { tail -40 /tmp/bench-triton-*/server.log; exit 1; }
