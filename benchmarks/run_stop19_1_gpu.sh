#!/bin/bash
# Stop 19, call 1 (one H200): stop 18's prepared FOLD=0 experiment (run_fold_check_gpu.sh's steps:
# prediction there: D = 128 union -5..-8%, D = 64 a wash), and where the eager path's host time goes
# at 2k (attention.py's 2k row is 0.22x eager, 1.06x replayed: host bound), plus overhead_pieces'
# direct-launch column check, never run on a GPU since stop 17's cleanup.
#   OUT=/tmp/o bash benchmarks/run_stop19_1_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_1
timeout 100 python3 benchmarks/overhead.py > "$D/overhead.log" 2>&1
stamp "overhead rc=$?"
timeout 150 python3 benchmarks/attention.py --out "$D/t128" --n 16384,65536 --d 128 --causal 1 --c 32 \
  --backends cudnn --tune ";FOLD=0" > "$D/t128.log" 2>&1
stamp "tune d128 rc=$?"
timeout 80 python3 benchmarks/attention.py --out "$D/t64" --n 16384 --d 64 --heads 12 --layout packed --qscale 2 \
  --causal 1 --c 8 --backends cudnn --tune ";FOLD=0" > "$D/t64.log" 2>&1
stamp "tune gpt rows rc=$?"
pieces 70
sm90_tests 110 "sm90_union_matches or pairs_match"
grep -E "^\|" "$D/overhead.log" | head -16
tune_rows "$D/t128.log" "$D/t64.log"
pack stop19_1
