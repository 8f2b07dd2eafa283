#!/bin/bash
# Stop 13's fourth device call (one H200), FOLD now the default of the Gluon union. Phase (b) at
# head dim 64 was never tuned on its own (it took D = 128's shape: 8 warps, 64-column chunks, one CTA
# per SM at 202 registers): two CTAs per SM with 4 warps and 32-column chunks (236 registers), 64-row
# sub-blocks with 4 warps (SUB=2), 32-column chunks with 8 warps (138 registers). Predicted: if
# phase (b) is latency bound at 8 warps per SM (ncu at D=128: 12.5% occupancy, long-scoreboard
# stalls), two CTAs per SM take 10-20% off its 0.96 ms. Then the kernel profile of one f+b at 16k.
#   OUT=/tmp/o bash benchmarks/run_stop13_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_4
tune16k 64 110 ";warps_b=4,UB=32;SUB=2,warps_b=4;UB=32;SUB=2"
tune_rows "$D"/tune*.log
timeout 60 python3 benchmarks/profile_kernels.py --n 16384 > "$D/profile.md" 2>&1
stamp "profile rc=$?"
timeout 50 python3 benchmarks/profile_kernels.py --n 16384 --d 64 --h 12 > "$D/profile_d64_h12.md" 2>&1
stamp "profile d64 rc=$?"
grep -E "us of kernels|union|sparse|expand|key_l1|block_keys|cudnn|copy|fill" "$D/profile.md" | cut -c1-160 | head -24
grep -E "us of kernels|union|sparse|expand" "$D/profile_d64_h12.md" | cut -c1-160 | head -12
pack stop13_4
