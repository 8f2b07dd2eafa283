#!/bin/bash
# Stop 17, call 2 (one H200), at the define + impl registration (call 1: the 8k step's host launch
# time fell from 11.4 to 5.6 ms above inductor's). Here: the host-time pieces (overhead_pieces.py,
# which failed in call 1 on a schema annotation); GPT-124M end to end at 8k and 16k, c = 8 and 32,
# step time against inductor and the held-out losses; the 8k step under CUDA graphs for both
# backends (reduce-overhead: no host launch time at all).
#   OUT=/tmp/o bash benchmarks/run_stop17_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_2
pieces 90
timeout 200 python3 benchmarks/e2e_gpt.py --out "$D/e2e8k" --lengths 8192 --c 8,32 --steps 40 \
  --loss-steps 200 --profile-lengths 8192 --budget-s 190 > "$D/e2e8k.log" 2>&1
stamp "e2e 8k rc=$?"
grep -h "^| 8192 \|within noise" "$D/e2e8k/e2e_gpt.md"
timeout 170 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k" --lengths 16384 --c 8,32 --steps 30 \
  --loss-steps 100 --profile-lengths 0 --budget-s 160 > "$D/e2e16k.log" 2>&1
stamp "e2e 16k rc=$?"
grep -h "^| 16384 \|within noise" "$D/e2e16k/e2e_gpt.md"
timeout 100 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --mode reduce-overhead --out "$D/jitter_ro" \
  > "$D/jitter_ro.log" 2>&1
stamp "jitter reduce-overhead rc=$?"
grep -E "wall median" "$D/jitter_ro.log"
pack stop17_2
