#!/bin/bash
# Ran at commit 481e1de (stop 12, call 4); results in benchmarks/results/: h200_stop12_variants.md,h200_stop12_4_ncu_union.txt.
# Stop 12's fourth device call (one H200). Call 3 showed the Gluon union kernel's MMA overlap does
# not pay while each warp's instruction stream per tile (~360 instructions at ~5.3 cycles each) is
# longer than two tiles of MMA. Here K comes by TMA (one instruction per tile instead of ~70 for
# cp.async addresses, masks, waits and fences): timed against the Triton kernel at 16k, its tests
# (including a transposed [B, L, H, D] key tensor), and its tensor-pipe use and stalls under ncu.
#   OUT=/tmp/o bash benchmarks/run_stop12_tma_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_4
sm90_tests 150 "sm90 or misses_no_kept"
tune16k 128 120 "SM90=0;SM90=1;SM90=1,NB=3;SM90=0,stages_a=2,maxnreg_a=168"
tune16k 64 100 "SM90=0;SM90=1"
tune_rows "$D"/tune*.log
ncu_union 150 union_kernel_sm90 1 --section SpeedOfLight --section WarpStateStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
grep -E "^  [_a-z0-9]*union_kernel|Duration|hmma|inst_executed|Warp Cycles Per Issued|Issue Slots Busy|stalled" "$D/ncu128.txt" | awk '$NF+0 >= 0.05 || /union|Duration|Issue|hmma|inst_exec/' | head -40
pack stop12_4
