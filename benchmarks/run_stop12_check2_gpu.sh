#!/bin/bash
# Ran at commit 51c1c88 (stop 12, call 7); results in benchmarks/results/: h200_stop12_7_tests_gpu.log.
# Stop 12's seventh device call (one H200): call 6's test run timed out after 57 of its tests with
# one failure (test_compiled_backward_traces_the_kernels: the Gluon union's eligibility check read
# the key tensor's data pointer while torch.compile traced the backward on fake tensors; now it reads
# shapes only and the op copies a key tensor TMA cannot read). This runs the compiled-path and
# CUDA-graph tests that call 6 did not reach, and the Gluon union tests.
#   OUT=/tmp/o bash benchmarks/run_stop12_check2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_7
timeout 170 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "compiled or sm90" \
  tests/test_cuda_graphs_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
grep -E "passed|failed|Error|assert" "$D/tests_gpu.log" | tail -15
pack stop12_7
