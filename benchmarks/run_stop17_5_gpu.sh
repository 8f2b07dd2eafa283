#!/bin/bash
# Stop 17, call 5 (one H200): the direct-launch test again, rewritten after call 4 (its misaligned
# q had no fast forward kernel, which the test's helper needs; a new length class replaces it).
#   OUT=/tmp/o bash benchmarks/run_stop17_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_5
timeout 100 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py \
  -k "direct_launch or unaligned or sm90_union_matches" > "$D/tests.log" 2>&1
stamp "tests rc=$?"
tail -n 2 "$D/tests.log"
pack stop17_5
