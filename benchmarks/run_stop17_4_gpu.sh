#!/bin/bash
# Stop 17, call 4 (one H200): the direct-launch test as fixed after call 3 (its unaligned q took
# another forward kernel, so its unions differed from the aligned ones in the margin's last bits;
# and that failed cuDNN call had taken cuDNN away from every later call: dispatch.forward now skips
# misaligned inputs without marking the kernel), the forward-path tests, and GPT-124M at 16k, c = 8.
#   OUT=/tmp/o bash benchmarks/run_stop17_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_4
sm90_tests 120 "direct_launch or forward_paths or unaligned or sm90_union_gradients"
timeout 150 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k" --lengths 16384 --c 8 --steps 30 \
  --loss-steps 100 --profile-lengths 0 --budget-s 140 > "$D/e2e16k.log" 2>&1
stamp "e2e 16k rc=$?"
grep -h "^| 16384 \|within noise" "$D/e2e16k/e2e_gpt.md"
pack stop17_4
