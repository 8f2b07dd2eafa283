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
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "sm90 or misses_no_kept" > "$D/tests_sm90.log" 2>&1
stamp "sm90 tests rc=$?"
tail -n 3 "$D/tests_sm90.log"
timeout 120 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1;SM90=1,NB=3;SM90=0,stages_a=2,maxnreg_a=168" > "$D/tune128.log" 2>&1
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
cd "$OUT" && tar czf stop12_4.tgz stop12_4 && rm -rf stop12_4
