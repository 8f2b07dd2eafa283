#!/bin/bash
# Ran at commit 04068a2 (stop 12, call 1); results in benchmarks/results/: h200_stop12_variants.md.
# Stop 12's first device call (one H200): the Gluon union pass (union_hopper.py, SM90=1) against the
# Triton one (SM90=0): its GPU tests first, then both timed side by side at 16k (head dims 128 and
# 64; NB = K buffers), then the target rows against cuDNN with the default (SM90=1).
#   OUT=/tmp/o bash benchmarks/run_stop12_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12
sm90_tests 150 "sm90 or misses_no_kept" -x
tune16k 128 120 "SM90=0;SM90=1;SM90=1,NB=3"
tune16k 64 90 "SM90=0;SM90=1"
tune_rows "$D"/tune*.log
timeout 150 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
grep -h "Error\|error" "$D"/*.log | head -20
pack stop12_1
