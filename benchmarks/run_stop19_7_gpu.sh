#!/bin/bash
# Stop 19, call 7 (one H200): tests/test_min_length.py after min_length's CUDA default moved from
# 4096 to 8192 (call 6: GPT-124M at 4k lost again, 0.82x).
#   OUT=/tmp/o bash benchmarks/run_stop19_7_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_7
timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_min_length.py > "$D/tests.log" 2>&1
stamp "tests rc=$?"
tail -3 "$D/tests.log"
pack stop19_7
