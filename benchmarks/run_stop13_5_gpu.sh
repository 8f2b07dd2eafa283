#!/bin/bash
# Stop 13's fifth device call (one H200): phase (b) reading its column list a chunk ahead
# (prefetch_cols, now the default; predicted: one dependent L2 latency less per chunk, ~5% of
# phase (b) at most; at D = 128 it spills 28 bytes, so it may lose there) against the old order,
# then the GPU test files at this stop's kernels (FOLD on in the Gluon union, phase (b) at D <= 64
# with 4 warps and 32-column chunks, the union expansion at 32 words per step).
#   OUT=/tmp/o bash benchmarks/run_stop13_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_5
tune16k 128 40 ";prefetch_cols=0"
tune16k 64 40 ";prefetch_cols=0"
tune_rows "$D"/tune*.log
timeout 440 python3 -m pytest -q -p no:cacheprovider -rfE --durations=8 tests/test_kernels_gpu.py \
  tests/test_cuda_graphs_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
grep -E "passed|failed|Error|assert|^[0-9.]+s " "$D/tests_gpu.log" | tail -25
pack stop13_5
