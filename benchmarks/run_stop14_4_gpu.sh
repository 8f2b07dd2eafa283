#!/bin/bash
# Stop 14's fourth device call (one H200): the end-to-end GPT-124M at 8k and 16k tokens with this
# stop's code, c = 8 (viable on trained attention now that the union capacity is 64c) and c = 32,
# against backend="inductor"; losses within the time budget.
#   OUT=/tmp/o bash benchmarks/run_stop14_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop14_4
timeout 470 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8,32 --budget-s 420 \
  > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack stop14_4
