#!/bin/bash
# Ran at commit 3ce29e9 (stop 12, call 3); results in benchmarks/results/: h200_stop12_variants.md,h200_stop12_3_ncu_union.txt.
# Stop 12's third device call (one H200). Call 2's Nsight Compute run found both union kernels at
# ~52% tensor-pipe activity with nothing saturated (issue slots 33-36%, shared memory 45-49%, L2
# 34%), 2 CTAs of 4 warps per SM, ~5 cycles between a warp's instructions: latency bound. Here:
# the Gluon kernel with the key norms loaded a tile ahead (their L2 latency was on every tile's
# path) against the Triton kernel, the Triton kernel capped to 3 CTAs per SM (maxnreg_a, fewer
# stages), and every stall reason of both kernels under ncu.
#   OUT=/tmp/o bash benchmarks/run_stop12_ncu2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_3
tune16k 128 120 "SM90=0;SM90=1;SM90=0,stages_a=2,maxnreg_a=168;SM90=0,stages_a=2"
tune16k 64 100 "SM90=0;SM90=1;SM90=0,maxnreg_a=128"
tune_rows "$D"/tune*.log
ncu_union 200 union_kernel 0,1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"
grep -E "^  [_a-z]*union_kernel|Duration|hmma|Warp Cycles Per Issued|Issue Slots Busy|stalled" "$D/ncu128.txt" | awk '$NF+0 >= 0.05 || /union|Duration|Issue|hmma/' | head -70
sm90_tests 100 "sm90 or misses_no_kept"
pack stop12_3
