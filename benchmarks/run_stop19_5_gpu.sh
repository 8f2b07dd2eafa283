#!/bin/bash
# Stop 19, call 5 (one H200): the GPU tests of call 4 again after the conftest fix (its three
# failures: the CUDA-graph tests compiled before the tiny-shapes override applied, so their models
# kept exact attention and "replays repeated the masks").
#   OUT=/tmp/o bash benchmarks/run_stop19_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_5
timeout 200 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_min_length.py tests/test_cuda_graphs_gpu.py \
  > "$D/tests.log" 2>&1
stamp "tests rc=$?"
tail -3 "$D/tests.log"
pack stop19_5
