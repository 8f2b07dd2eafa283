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
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "sm90 or misses_no_kept" > "$D/tests_sm90.log" 2>&1
stamp "sm90 tests rc=$?"
tail -n 3 "$D/tests_sm90.log"
timeout 120 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1;SM90=1,NB=3" > "$D/tune128.log" 2>&1
stamp "tune128 rc=$?"
timeout 100 python3 benchmarks/attention.py --out "$D/tune64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1" > "$D/tune64.log" 2>&1
stamp "tune64 rc=$?"
tune_rows "$D"/tune*.log
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 $NCU --profile-from-start off --clock-control none -k regex:union_kernel_sm90 \
  --section SpeedOfLight --section WarpStateStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum" \
  python3 benchmarks/ncu_union.py --n 16384 --d 128 --variants 1 > "$D/ncu128.txt" 2>&1
stamp "ncu rc=$?"
grep -E "^  [_a-z0-9]*union_kernel|Duration|hmma|inst_executed|Warp Cycles Per Issued|Issue Slots Busy|stalled" "$D/ncu128.txt" | awk '$NF+0 >= 0.05 || /union|Duration|Issue|hmma|inst_exec/' | head -40
cd "$OUT" && tar czf stop12_5.tgz stop12_5 && rm -rf stop12_5
