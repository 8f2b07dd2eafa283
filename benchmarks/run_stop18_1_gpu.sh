#!/bin/bash
# Stop 18, call 1 (one H200): the Gluon union's epilogue as a tree (each lane's max over its 32
# columns in 5 levels instead of a 31-deep FMNMX chain) and one warp-wide redux.sync OR of the
# lanes' keep bits (instead of a quad max and a 3-deep shuffle sum: 5 dependent SHFL per tile).
# Predicted: the union pass at head dim 64 (16k, H=32) 1.46 -> ~1.2-1.3 ms if the per-tile
# dependency chain sets its time; at head dim 128 ~-5%. Here: the union tests (the Gluon union
# must equal the Triton one bit for bit), the A/B of sus_backward against HEAD's kernels, the
# attention target rows (first run since stop 17's host-path changes), GPT-124M at 8k and 16k.
#   bash benchmarks/ab_old.sh ca971b0 && OUT=/tmp/o bash benchmarks/run_stop18_1_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop18_1
sm90_tests 150 "sm90 or union_misses or keep_probabilities or unbiased"
timeout 150 python3 benchmarks/ab_kernels.py --cases d64,gpt_q2,16k,64k --rounds 3 > "$D/ab.log" 2>&1
stamp "ab rc=$?"
grep -E "^\| " "$D/ab.log"
timeout 120 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
timeout 150 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8 --steps 30 \
  --loss-steps 0 --profile-lengths 16384 --budget-s 140 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack stop18_1
