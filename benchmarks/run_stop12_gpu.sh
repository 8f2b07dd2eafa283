#!/bin/bash
# Ran at commit 04068a2 (stop 12, call 1); results in benchmarks/results/: h200_stop12_variants.md.
# Stop 12's first device call (one H200): the Gluon union pass (union_hopper.py, SM90=1) against the
# Triton one (SM90=0): its GPU tests first, then both timed side by side at 16k (head dims 128 and
# 64; NB = K buffers), then the target rows against cuDNN with the default (SM90=1).
#   OUT=/tmp/o bash benchmarks/run_stop12_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE -x tests/test_kernels_gpu.py -k "sm90 or misses_no_kept" \
  > "$D/tests_sm90.log" 2>&1
stamp "sm90 tests rc=$?"
tail -n 3 "$D/tests_sm90.log"
timeout 120 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1;SM90=1,NB=3" > "$D/tune128.log" 2>&1
stamp "tune128 rc=$?"
timeout 90 python3 benchmarks/attention.py --out "$D/tune64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune "SM90=0;SM90=1" > "$D/tune64.log" 2>&1
stamp "tune64 rc=$?"
tune_rows "$D"/tune*.log
timeout 150 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
grep -h "Error\|error" "$D"/*.log | head -20
cd "$OUT" && tar czf stop12_1.tgz stop12 && rm -rf stop12
