#!/bin/bash
# Stop 16, call 5 (one H200): call 4 found the sus GPT step at 8k host bound (host launch 25.4 ms of
# a 26.0 ms step; inductor: 14 of 29.6). Here the host time split into forward / backward /
# clip+AdamW, and a cProfile of 5 steps with the backward run on the calling thread.
#   OUT=/tmp/o bash benchmarks/run_stop16_5_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop16_5
timeout 230 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --cprofile 5 --out "$D/jitter" \
  > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median|host launch|^\s+[A-Za-z].* min .* median" "$D/jitter.log"
grep -A32 "Ordered by: internal time" "$D/jitter.log" | tail -62 | cut -c1-160
grep -A50 "Ordered by: cumulative" "$D/jitter.log" | tail -50 | cut -c1-160
pack stop16_5
