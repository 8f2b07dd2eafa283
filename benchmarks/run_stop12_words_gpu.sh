#!/bin/bash
# Ran at commit d956ca1 (stop 12, call 5); results in benchmarks/results/: h200_stop12_variants.md,h200_stop12_5_ncu_union.txt.
# Stop 12's fifth device call (one H200): the Gluon union kernel (TMA K tiles, call 4) now with
# each warp's 16 keep bits per tile staged in shared memory and the block's tile list compacted
# once at its end (no cross-warp reduction, three barriers fewer per tile): its tests, timed against
# the Triton kernel at 16k, and under ncu.
#   OUT=/tmp/o bash benchmarks/run_stop12_words_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_5
sm90_tests 150 "sm90 or misses_no_kept"
tune16k 128 120 "SM90=0;SM90=1;SM90=1,NB=3"
tune16k 64 100 "SM90=0;SM90=1"
tune_rows "$D"/tune*.log
ncu_union 150 union_kernel_sm90 1 --section SpeedOfLight --section WarpStateStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
grep -E "^  [_a-z0-9]*union_kernel|Duration|hmma|inst_executed|Warp Cycles Per Issued|Issue Slots Busy|stalled" "$D/ncu128.txt" | awk '$NF+0 >= 0.05 || /union|Duration|Issue|hmma|inst_exec/' | head -40
pack stop12_5
