#!/bin/bash
# Stop 17, call 5 (one H200): the direct-launch test again, rewritten after call 4 (its misaligned
# q had no fast forward kernel, which the test's helper needs; a new length class replaces it).
#   OUT=/tmp/o bash benchmarks/run_stop17_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_5
sm90_tests 100 "direct_launch or unaligned or sm90_union_matches"
pack stop17_5
