#!/bin/bash
# Stop 19, call 3 (one H200): the eager host time at 2k split by function (host_breakdown.py:
# timers, no profiler), and GPT-124M at short lengths (2k, 4k; batch 1) against inductor: whether
# SUS costs a user time where it saves little (the 2k attention row is host bound).
#   OUT=/tmp/o bash benchmarks/run_stop19_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_3
timeout 90 python3 benchmarks/host_breakdown.py > "$D/host_breakdown.log" 2>&1
stamp "host_breakdown rc=$?"
timeout 260 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 2048,4096 --c 8 --steps 30 \
  --loss-steps 0 --profile-lengths 4096 --budget-s 240 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
cat "$D/host_breakdown.log" | tail -25
e2e_summary
pack stop19_3
