#!/bin/bash
# Stop 11's first device call (~5 min on one H200; results benchmarks/results/h200_stop11_1_*): the
# union pass's RNG (HASH) and fold (FOLD) and phase (b)'s UB=64 / 8-warp shapes timed side by side
# against the stop-10 kernels (HASH=0, FOLD=0) at 16k, then the target rows against cuDNN, then the
# kernel tests. It ran at commit b0316fa, where sus_bwd had the HASH and FOLD knobs; HASH=1 and
# phase (b)'s UB=64, 8 warps, SUB=1 won and are now the only path, FOLD lost and was removed.
# The second call is benchmarks/run_stop11_check_gpu.sh.
#   OUT=/tmp/o bash benchmarks/run_stop11_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop11
timeout 150 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "HASH=0,FOLD=0;HASH=1,FOLD=0;HASH=1,FOLD=1;UB=64,warps_b=8,SUB=1;UB=64,warps_b=8,SUB=2;FOLD=0,UB=64,warps_b=8,SUB=1" \
  > "$D/tune128.log" 2>&1
stamp "tune128 rc=$?"
timeout 90 python3 benchmarks/attention.py --out "$D/tune64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune "HASH=0,FOLD=0;HASH=1,FOLD=0;HASH=1,FOLD=1" > "$D/tune64.log" 2>&1
stamp "tune64 rc=$?"
timeout 170 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rfE -x tests/test_kernels_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
tail -n 4 "$D/tests_gpu.log"
tune_rows "$D"/tune*.log
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
