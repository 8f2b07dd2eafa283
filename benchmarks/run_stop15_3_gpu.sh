#!/bin/bash
# Stop 15's third device call (one H200): the GPU test suite at the commit that folds the union
# expansion into the Gluon union kernel (call 2 ran only part of it before its timeout).
#   OUT=/tmp/o bash benchmarks/run_stop15_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop15_3
timeout 500 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py tests/test_cuda_graphs_gpu.py \
  > "$D/tests_gpu.log" 2>&1
stamp "gpu tests rc=$?"
tail -n 4 "$D/tests_gpu.log"
pack stop15_3
