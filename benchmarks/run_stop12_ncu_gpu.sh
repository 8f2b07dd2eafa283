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
timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "sm90" > "$D/tests_sm90.log" 2>&1
stamp "sm90 tests rc=$?"
tail -n 3 "$D/tests_sm90.log"
timeout 120 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1;SM90=1,NB=3" > "$D/tune128.log" 2>&1
stamp "tune128 rc=$?"
timeout 90 python3 benchmarks/attention.py --out "$D/tune64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1" > "$D/tune64.log" 2>&1
stamp "tune64 rc=$?"
tune_rows "$D"/tune*.log
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 240 $NCU --profile-from-start off --clock-control none -k regex:union_kernel \
  --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
  --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
  --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_uniform.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio \
  python3 benchmarks/ncu_union.py --n 16384 --d 128 > "$D/ncu128.txt" 2>&1
stamp "ncu rc=$?"
grep -E "union_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|hmma|Warp Cycles Per Issued|Stall|Issue Slots Busy|Achieved Occupancy|Shared Memory|L2 Cache Throughput|wavefronts|stalled|Registers Per|Block Limit|Executed Ipc" "$D/ncu128.txt" | head -80
cd "$OUT" && tar czf stop12_2.tgz stop12_2 && rm -rf stop12_2
