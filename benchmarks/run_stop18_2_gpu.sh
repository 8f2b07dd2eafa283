#!/bin/bash
# Stop 18, call 2 (one H200): PAIR, the Gluon union loading K two tiles per TMA at head dim 64
# (offline SASS: 4 CTA barriers per two tiles instead of 7, 342 instructions instead of 362; 255
# registers, still two CTAs per SM). Predicted: the union at D = 64 -5..-15% against the tree
# epilogue alone (c080ad1), nothing at D = 128 (PAIR is off there). Here: the union tests (PAIR's
# unions must equal the single-tile kernel's bit for bit), the A/B against c080ad1 and against
# ca971b0 (before the tree epilogue: its effect on the kernel alone), GPT-124M at 8k and 16k.
#   bash benchmarks/ab_old.sh ca971b0 && mv benchmarks/_ab_old benchmarks/_ab_old_ca9 &&
#   bash benchmarks/ab_old.sh c080ad1 && OUT=/tmp/o bash benchmarks/run_stop18_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop18_2
sm90_tests 150 "sm90 or union_misses"
timeout 110 python3 benchmarks/ab_kernels.py --cases d64,gpt_q2,16k --rounds 3 > "$D/ab_tree.log" 2>&1
stamp "ab vs c080ad1 rc=$?"
grep -E "^\| |Error|error" "$D/ab_tree.log" | tail -6
rm -rf benchmarks/_ab_old && mv benchmarks/_ab_old_ca9 benchmarks/_ab_old
timeout 90 python3 benchmarks/ab_kernels.py --cases d64,gpt_q2 --rounds 3 > "$D/ab_ca9.log" 2>&1
stamp "ab vs ca971b0 rc=$?"
grep -E "^\| |Error|error" "$D/ab_ca9.log" | tail -6
timeout 150 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8 --steps 30 \
  --loss-steps 0 --profile-lengths 16384 --budget-s 140 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
grep -E "union_kernel_sm90|_sparse_bwd" "$D/e2e/e2e_gpt.md"
pack stop18_2
