#!/bin/bash
# Stop 13's first device call (one H200). Where the rest of the backward's time goes, before any
# kernel change: phase (b) with its gathers pipelined (stages_b: cp.async of the next chunk's K/V
# rows), the union expansion with fewer registers (WC, warps_e), phase (b) under Nsight Compute,
# and the host cost of an eager forward+backward at 2k (cProfile), which stop 12 measured at 2.0 ms.
#   OUT=/tmp/o bash benchmarks/run_stop13_1_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_1
timeout 150 python3 benchmarks/overhead.py > "$D/overhead_n2048.txt" 2>&1
stamp "overhead rc=$?"
grep -E "^\|" "$D/overhead_n2048.txt" | head -20
tune16k 128 200 ";stages_b=2;stages_b=3;WC=32;WC=32,warps_e=8;WC=64,warps_e=8"
tune16k 64 100 ";stages_b=2;stages_b=3"
tune_rows "$D"/tune*.log
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 $ncu --profile-from-start off --clock-control none -k "regex:sparse_bwd|union_expand" \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  python3 benchmarks/ncu_union.py --full --variants ";stages_b=2;WC=32,warps_e=8" > "$D/ncu_sparse.txt" 2>&1
stamp "ncu rc=$?"
grep -E "^  [_a-z]*(sparse|expand)|Duration|DRAM Through|L2 Cache Through|Memory Through|Compute \(SM\) Through|Warp Cycles Per Issued|Issue Slots Busy|Achieved Occ|stalled" "$D/ncu_sparse.txt" \
  | awk '$NF+0 >= 0.1 || !/stalled/' | head -80
pack stop13_1
