#!/bin/bash
# Ready for the next device session (written at stop 18, not run): FOLD=0 against the default FOLD=1
# now that the union's epilogue is a tree (stop 18). FOLD adds -lse2 / a through a k16 MMA: 12.5% more
# tensor work at head dim 128, 25% at 64. Stop 13 measured FOLD 2-4% faster, but with the old
# 31-deep FMNMX chain, where the loop was latency bound. Now the loop is closer to its MMA time
# (D = 128: 0.855 ms against ~0.63-0.78 of MMA at 16k), and FOLD=0's per-entry FFMA is independent
# work: offline SASS, 378 -> 502 instructions per two tiles at D = 128 (251 issue slots per tile per
# warp against 512 tensor cycles per tile), 344 -> 460 at D = 64 (PAIR; 230 against 256).
# Predicted: D = 128 union -5..-8% (64k c=32 would reach ~2.5x); D = 64 a wash.
#   OUT=/tmp/o bash benchmarks/run_fold_check_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh fold_check
timeout 150 python3 benchmarks/attention.py --out "$D/t128" --n 16384,65536 --d 128 --causal 1 --c 32 \
  --backends cudnn --tune ";FOLD=0" > "$D/t128.log" 2>&1
stamp "tune d128 rc=$?"
tune_rows "$D/t128.log"
timeout 80 python3 benchmarks/attention.py --out "$D/t64" --n 16384 --d 64 --heads 12 --layout packed --qscale 2 \
  --causal 1 --c 8 --backends cudnn --tune ";FOLD=0" > "$D/t64.log" 2>&1
stamp "tune gpt rows rc=$?"
tune_rows "$D/t64.log"
sm90_tests 150 "sm90_union_matches or union_misses or pairs_match"
pack fold_check
