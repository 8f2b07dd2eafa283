#!/bin/bash
# Stop 18, call 5 (one H200): the GPU tests that take PAIR's final expansion (popc counts, even and
# odd tiles one after the other) through the overflow path, deterministic mode, the union's superset
# property and the estimator's statistics, at the committed code.
#   OUT=/tmp/o bash benchmarks/run_stop18_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop18_5
sm90_tests 200 "overflow or union_misses or keep_probabilities or unbiased or compiled_matches"
pack stop18_5
