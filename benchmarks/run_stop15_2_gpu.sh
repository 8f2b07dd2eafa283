#!/bin/bash
# Stop 15's second device call (one H200): the union expansion folded into the Gluon union kernel.
#  1. the GPU tests of the Gluon union (its unions against the Triton kernel's, unbiasedness, stats);
#  2. ab_kernels.py: sus_backward at this commit against stop 14's (benchmarks/_ab_old, carried),
#     same process, alternating rounds, and every kernel of each;
#  3. the target rows against cuDNN (16k, 64k, 2k; c = 8, 32; replayed from a CUDA graph too).
#   bash benchmarks/ab_old.sh e901eef && OUT=/tmp/o bash benchmarks/run_stop15_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop15_2
sm90_tests 170 "union or stats or sm90 or unbiased or overflow or keep_prob"
timeout 150 python3 benchmarks/ab_kernels.py --cases 16k,16k_c8,64k,d64,gpt_q2 --rounds 3 > "$D/ab.txt" 2>&1
stamp "ab rc=$?"
grep -E "^\|" "$D/ab.txt" || tail -5 "$D/ab.txt"
(cd "$OUT" && tar czf stop15_2a.tgz "$(basename "$D")")  # the rows above survive a timeout below
timeout 110 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
pack stop15_2
