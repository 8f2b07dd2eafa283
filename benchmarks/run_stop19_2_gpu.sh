#!/bin/bash
# Stop 19, call 2 (one H200): where the host time goes at 2k, compiled and eager (host_profile.py),
# and the attention target rows measured in alternating rounds (attention.py --rounds 3): in call 1
# the same cuDNN forward at 64k took 29.36 ms as the baseline and 30.70 inside the SUS row.
#   OUT=/tmp/o bash benchmarks/run_stop19_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_2
timeout 120 python3 benchmarks/host_profile.py > "$D/host_profile.log" 2>&1
stamp "host_profile rc=$?"
timeout 300 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph --rounds 3 > "$D/att.log" 2>&1
stamp "attention rc=$?"
tail -8 "$D/host_profile.log"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
pack stop19_2
