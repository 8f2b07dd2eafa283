#!/bin/bash
# Stop 14's first device call (one H200): where the eager forward+backward at 16k leaves the GPU
# idle (stop 13: eager 3.80 ms against 3.66 replayed from a CUDA graph), the compiled f+b at 16k,
# the GPT-shaped head-dim-64 row that stop 13 left open (H=12, packed q/k/v views, peaky q) with
# phase (b)'s variants, and the FOLD union under ncu (is it tensor-pipe bound at D=128?).
#   OUT=/tmp/o bash benchmarks/run_stop14_1_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop14_1
timeout 120 python3 benchmarks/gaps.py --n 16384 --trace-dir "$D/traces" > "$D/gaps.txt" 2>&1
stamp "gaps rc=$?"
tail -8 "$D/gaps.txt"
(cd "$D/traces" 2>/dev/null && gzip -f *.json)
timeout 150 python3 benchmarks/attention.py --out "$D/att" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --graph --compiled-n 16384 > "$D/att.log" 2>&1
stamp "attention rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
grep -h '"method": "compiled' "$D/att.log" | cut -c1-200
(cd "$OUT" && tar czf stop14_1a.tgz "$(basename "$D")")  # the rows above survive a timeout below
timeout 150 python3 benchmarks/attention.py --out "$D/gpt" --d 64 --heads 12 --layout packed --qscale 3 \
  --n 16384 --causal 1 --c 32 --backends cudnn \
  --tune ";warps_b=4,UB=32;prefetch_cols=1;warps_b=4,UB=32,prefetch_cols=1" > "$D/gpt.log" 2>&1
stamp "gpt-shaped rc=$?"
grep -E "^\| 64" "$D/gpt/attention.md" 2>/dev/null || tail -5 "$D/gpt.log"
tune_rows "$D/gpt.log"
ncu_union 150 union_kernel_sm90 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active"
grep -E "^  [_a-z0-9]*union_kernel|Duration|mma|Warp Cycles Per Issued|Issue Slots Busy|stalled" "$D/ncu128.txt" | awk '$NF+0 >= 0.05 || /union|Duration|Issue|mma/' | head -40
pack stop14_1
