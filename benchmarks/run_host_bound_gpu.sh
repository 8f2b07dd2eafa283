#!/bin/bash
# Written in stop 16. Stop 17 ran its step_jitter part (call 2: 8k under CUDA graphs, inductor 29.2 ms,
# sus c=8 23.9 ms, 1.22x; benchmarks/results/h200_stop17_2_step_jitter_reduce_overhead.txt), not yet
# its e2e_gpt part (both lengths, both c, losses, under CUDA graphs). Stop 16 found GPT-124M's sus step at 8k
# host bound on the H200 machines: the host took 25-36 ms to launch a step whose GPU work is ~22-24 ms
# (inductor: 14-22 ms of host time, GPU bound at 29.6 ms), and the step time followed the host's
# speed from one machine, and one stretch of steps, to the next (benchmarks/results/h200_stop16_4..6).
# CUDA graphs take the host out: both backends with mode="reduce-overhead", at 8k and 16k, and
# step_jitter.py under it (launch should fall far below wall).
#   OUT=/tmp/o bash benchmarks/run_host_bound_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh host_bound
timeout 200 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --mode reduce-overhead --out "$D/jitter" \
  > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median|host launch" "$D/jitter.log"
timeout 330 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8,32 --mode reduce-overhead \
  --loss-steps 100,50 --profile-lengths 0 --budget-s 320 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack host_bound
