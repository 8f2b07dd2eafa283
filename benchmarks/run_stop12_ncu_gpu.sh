#!/bin/bash
# Ran at commit 26dca2e (stop 12, call 2); results in benchmarks/results/: h200_stop12_variants.md,h200_stop12_2_ncu_union.txt.
# Stop 12's second device call (one H200): the Gluon union pass with its masked and unmasked tiles
# in separate pipelined runs, timed against the Triton one (SM90=0/1) at 16k, its GPU tests, and
# both union kernels under Nsight Compute (tensor-pipe use, stall reasons, shared-memory and L2
# traffic) to see what bounds phase (a).
#   OUT=/tmp/o bash benchmarks/run_stop12_ncu_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_2
sm90_tests 120 "sm90"
tune16k 128 120 "SM90=0;SM90=1;SM90=1,NB=3"
tune16k 64 90 "SM90=0;SM90=1"
tune_rows "$D"/tune*.log
ncu_union 240 union_kernel 0,1 \
  --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
  --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
  --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_uniform.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio
grep -E "union_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|hmma|Warp Cycles Per Issued|Stall|Issue Slots Busy|Achieved Occupancy|Shared Memory|L2 Cache Throughput|wavefronts|stalled|Registers Per|Block Limit|Executed Ipc" "$D/ncu128.txt" | head -80
pack stop12_2
